"""Member-by-member cosine similarity of the whole network's weights: BatchEnsemble (rank 1) vs Deep Ensemble."""
import numpy as np

from empirics_results import DIVERSITY, first_seed, run_file, studies, summary
from style import FULL_WIDTH, figure, save

PANELS = ("be-r1", "be-full", "de", "mcd")

for preset in studies():
    study = summary(preset)
    runs = [run for run in PANELS if run in study["runs"]]
    if not runs:
        continue
    fig, axes = figure(width=min(FULL_WIDTH, 1.8 * len(runs) + 0.6), height=1.9, ncols=len(runs), squeeze=False)
    for ax, run in zip(axes[0], runs):
        seed = first_seed(study, run)
        matrix = np.array(run_file(preset, run, seed, DIVERSITY)["matrices"]["weights"]["network"]["cosine"])
        image = ax.imshow(matrix, vmin=0, vmax=1, cmap="viridis")
        for (i, j), value in np.ndenumerate(matrix):
            ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=6,
                    color="black" if value > 0.6 else "white")
        ax.set_title(f"{run} (seed {seed})")
        ax.set_xlabel("member j")
        ax.set_xticks(range(len(matrix)))
        ax.set_yticks(range(len(matrix)))
        ax.grid(False)
    axes[0][0].set_ylabel("member i")
    fig.colorbar(image, ax=axes[0].tolist(), label="cos(w_i, w_j)", shrink=0.8)
    save(fig, f"fig_empirics_cosine_heatmap_{preset}")
