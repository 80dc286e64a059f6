"""Diversity vs BatchEnsemble rank (MI under shift, 1 − weight cosine) with theory's reachable fraction (right)."""
import numpy as np

from empirics_results import metric, studies, summary
from style import figure, save

for preset in studies():
    study = summary(preset)
    sweep = [(run, fields.get("rank", 1)) for run, fields in ((r, s["fields"]) for r, s in study["runs"].items())
             if fields.get("method") == "batchensemble" and fields.get("init", "normal") == "normal"
             and fields.get("init_std", 0.5) == 0.5 and fields.get("variant", "channel-wise") == "channel-wise"]
    if len({rank for _, rank in sweep}) < 2:
        continue
    sweep.sort(key=lambda item: np.inf if item[1] == "full" else item[1])
    positions = np.arange(len(sweep))
    fig, ax = figure(height=2.5)
    for key, label, transform in (("shift/mutual_information", "MI under shift (nats)", lambda v: v),
                                  ("weights/network/mean_cosine", "1 − weight cosine", lambda v: 1 - v)):
        stats = [metric(study, run, key) for run, _ in sweep]
        ax.errorbar(positions, [transform(s["mean"]) for s in stats], yerr=[s["std"] for s in stats], marker="o",
                    capsize=2, label=label)
    de = [run for run in study["runs"] if study["runs"][run]["fields"].get("method") == "deep-ensemble"]
    if de:
        ax.axhline(metric(study, de[0], "shift/mutual_information")["mean"], color="C0", linestyle=":",
                   label="Deep Ensemble MI (shift)")
    ax.set_xticks(positions, [str(rank) for _, rank in sweep])
    ax.set_xlabel("BE rank r")
    ax.set_ylabel("diversity")
    right = ax.twinx()
    right.plot(positions, [metric(study, run, "theory/reachable_fraction")["mean"] for run, _ in sweep], color="C3",
               marker="s", linestyle="--", label="reachable fraction (theory)")
    right.set_ylabel("dim Im Φ / dim DE", color="C3")
    right.set_ylim(0, 1.05)
    right.grid(False)
    handles = ax.get_legend_handles_labels()
    extra = right.get_legend_handles_labels()
    ax.legend(handles[0] + extra[0], handles[1] + extra[1], fontsize=6, loc="center right")
    save(fig, f"fig_empirics_rank_{preset}")
