"""Diversity and accuracy against the architecture, for studies whose MLP runs span several hidden-layer shapes
(e.g. ``mlp-scale``): MI under shift and shift ensemble accuracy of each method and init (mean ± std over seeds), one
point per architecture in the preset's order; the width series and the depth series share the axis, labelled by their
hidden widths (the BE's and DE's). A single model is drawn at the shape of the BE it matches in parameter count
(``empirics.studies.report.matched_single``; Abe et al. 2022's baseline)."""
from empirics.studies.report import init_label, matched_single

from empirics_results import classification_study, metric, studies, summary
from style import FULL_WIDTH, figure, save

PANELS = (("shift/mutual_information", "MI under shift (nats)"), ("shift/ensemble/accuracy", "shift ensemble accuracy"))


def shape(fields: dict) -> str:
    return "-".join(str(width) for width in fields.get("widths", []))


METHODS = {"batchensemble": "BE", "deep-ensemble": "DE", "mc-dropout": "MCD", "single": "single (parameter-matched)"}


def series(fields: dict) -> str:
    """A run's method and init, without its architecture: the points of one series."""
    method = fields.get("method", "batchensemble")
    return f"BE, {init_label(fields)}" if method == "batchensemble" else METHODS.get(method, method)


for preset in studies():
    study = summary(preset)
    fields = {run: entry["fields"] for run, entry in study["runs"].items()}
    if not classification_study(study) or any(entry.get("arch", "mlp") != "mlp" for entry in fields.values()):
        continue
    shapes = list(dict.fromkeys(shape(entry) for entry in fields.values() if entry.get("method") != "single"))
    if len(shapes) < 2:
        continue
    anchors = {matched_single(study, run): shape(entry) for run, entry in fields.items()
               if entry.get("method") == "batchensemble"}  # a parameter-matched single model sits at its BE's shape
    lines: dict[str, dict[int, str]] = {}
    for run, entry in fields.items():
        anchor = anchors.get(run) if entry.get("method") == "single" else shape(entry)
        if anchor in shapes:
            lines.setdefault(series(entry), {})[shapes.index(anchor)] = run
    fig, axes = figure(width=FULL_WIDTH, height=2.6, ncols=2)
    for ax, (key, label) in zip(axes, PANELS):
        for offset, (name, points) in enumerate(lines.items()):
            found = [(x, metric(study, points[x], key)) for x in sorted(points)]
            found = [(x, value) for x, value in found if value and any(value["values"])]  # a single model's MI is 0
            if found:  # unconnected points: the width and depth series share the axis but are not one sequence
                ax.errorbar([x + 0.08 * (offset - len(lines) / 2) for x, _ in found], [v["mean"] for _, v in found],
                            yerr=[v["std"] or 0 for _, v in found], marker="o", linestyle="none", capsize=2,
                            label=name, color=f"C{offset}")
        ax.set_xticks(range(len(shapes)))
        ax.set_xticklabels(shapes, rotation=30, fontsize=6)
        ax.set_xlabel("hidden widths")
        ax.set_ylabel(label)
    axes[1].legend(fontsize=6)
    fig.suptitle(f"{preset}: diversity and accuracy against the architecture (mean ± std over seeds)", fontsize=8)
    save(fig, f"fig_empirics_scale_{preset}")
