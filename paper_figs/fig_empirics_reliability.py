"""Reliability diagrams (accuracy vs confidence, 15 bins) of each method's ensemble on test and shifted data."""
import numpy as np

from empirics_results import DIVERSITY, classification_study, first_seed, run_file, studies, summary
from style import FULL_WIDTH, figure, save

for preset in studies():
    study = summary(preset)
    if not classification_study(study):
        continue
    fig, axes = figure(width=FULL_WIDTH, height=2.6, ncols=2, sharey=True)
    for ax, split in zip(axes, ("test", "shift")):
        ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=0.8, label="perfect calibration")
        for run in study["runs"]:
            seed = first_seed(study, run)
            curve = run_file(preset, run, seed, DIVERSITY)["curves"]["reliability"][split]
            filled = np.array(curve["count"]) > 0
            ax.plot(np.array(curve["confidence"])[filled], np.array(curve["accuracy"])[filled], marker="o", label=run)
        ax.set_title(f"{split} (seed of each run: first)")
        ax.set_xlabel("confidence (max p̄)")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
    axes[0].set_ylabel("accuracy")
    axes[1].legend(fontsize=6, ncol=2)
    save(fig, f"fig_empirics_reliability_{preset}")
