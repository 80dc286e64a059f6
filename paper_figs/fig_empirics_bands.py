"""Predictive bands of each method on the 1-D toy with a gap (regression study): ensemble mean, ±2 σ of the total
predictive variance (aleatoric + epistemic) and ±2 σ of the epistemic part alone, training clusters shaded; BE beside DE.
Reads the grid predictions that ``empirics.analysis.diversity`` saved in ``diversity.json`` (first seed); never
trains."""
import numpy as np

from empirics_results import DIVERSITY, first_seed, method_of, run_file, studies, summary
from style import FULL_WIDTH, figure, save

ORDER = ("single", "batchensemble", "deep-ensemble", "mc-dropout")

for preset in studies():
    study = summary(preset)
    runs = [run for run in study["runs"] if study["runs"][run]["fields"].get("dataset") == "toy-gap"]
    if not runs:
        continue
    runs.sort(key=lambda run: ORDER.index(method_of(study, run)))
    fig, axes = figure(width=FULL_WIDTH, height=1.9, ncols=len(runs), squeeze=False, sharey=True)
    for ax, run in zip(axes[0], runs):
        seed = first_seed(study, run)
        bands = run_file(preset, run, seed, DIVERSITY)["curves"]["bands"]
        x = np.array(bands["x"])
        means, variances = np.array(bands["member_mean"]), np.array(bands["member_variance"])
        mean, aleatoric, epistemic = means.mean(0), variances.mean(0), means.var(0)
        total = aleatoric + epistemic
        for low, high in ((-3, -1), (1, 3)):
            ax.axvspan(low, high, color="0.92", zorder=0)
        ax.fill_between(x, mean - 2 * np.sqrt(total), mean + 2 * np.sqrt(total), alpha=0.25, color="C0",
                        label="±2σ total")
        ax.fill_between(x, mean - 2 * np.sqrt(epistemic), mean + 2 * np.sqrt(epistemic), alpha=0.6, color="C3",
                        label="±2σ epistemic")
        for member in means:
            ax.plot(x, member, color="0.3", linewidth=0.4)
        ax.plot(x, bands["truth"], color="black", linestyle=":", linewidth=0.8, label="f(x)")
        ax.set_title(f"{run} (seed {seed})", fontsize=7)
        ax.set_xlabel("x")
    axes[0][0].set_ylabel("y")
    axes[0][0].legend(fontsize=5, loc="upper left")
    save(fig, f"fig_empirics_bands_{preset}")
