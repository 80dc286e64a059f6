"""Regression calibration: observed coverage of the ensemble's central intervals against their nominal level, on test
and shifted data, per run (first seed; the curves ``empirics.analysis.diversity`` saved). On the diagonal = calibrated;
below = over-confident."""
from empirics_results import DIVERSITY, classification_study, first_seed, run_file, studies, summary
from style import FULL_WIDTH, figure, save

for preset in studies():
    study = summary(preset)
    if classification_study(study):
        continue
    fig, axes = figure(width=FULL_WIDTH, height=2.6, ncols=2, sharey=True)
    for ax, split in zip(axes, ("test", "shift")):
        ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=0.8, label="calibrated")
        for run in study["runs"]:
            curve = run_file(preset, run, first_seed(study, run), DIVERSITY)["curves"]["coverage"][split]
            ax.plot(curve["level"], curve["coverage"], marker=".", label=run)
        ax.set_title(f"{split} (first seed of each run)")
        ax.set_xlabel("nominal level of the central interval")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
    axes[0].set_ylabel("observed coverage")
    axes[1].legend(fontsize=5, ncol=2)
    save(fig, f"fig_empirics_coverage_{preset}")
