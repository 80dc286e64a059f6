"""Fort et al. (2019)'s two pictures: the members of every ensemble run of one seed together in one weight-cosine
matrix (from each run's count sketch, error ~ 1/√d) and one test prediction-disagreement matrix.

Unlike Fort et al.'s independently initialised runs, every method of one seed draws its parameters from
``torch.manual_seed(seed)`` (``empirics.runs.train``): the single model, MC Dropout, Deep-Ensemble member 0 and
BatchEnsemble's slow weights start from the same initial kernels (common random numbers). A high cosine between, say,
MC Dropout and DE member 0 therefore shows how little training moved both away from that shared start, not that two
methods found one solution; the caption says so."""
import numpy as np
import torch

from empirics.analysis.diversity import SKETCH_DIM, cross_cosine, cross_disagreement, load_sketch

from empirics_results import ensemble_runs, studies, summary
from style import FULL_WIDTH, RESULTS, figure, save

for preset in studies():
    study = summary(preset)
    seed = 0
    sketches = {run: load_sketch(RESULTS / preset / "runs" / run / f"seed{seed}")
                for run in ensemble_runs(study) if seed in study["runs"][run]["seeds"]}
    sketches = {run: value for run, value in sketches.items() if value is not None}
    if len(sketches) < 2:
        continue
    weights = torch.cat([value[0] for value in sketches.values()])
    labels = torch.cat([value[1] for value in sketches.values()])
    sizes = [len(value[0]) for value in sketches.values()]
    edges = np.cumsum(sizes)[:-1] - 0.5
    centres = np.cumsum(sizes) - np.array(sizes) / 2 - 0.5
    fig, axes = figure(width=FULL_WIDTH, height=3.4, ncols=2)
    panels = ((cross_cosine(weights, weights).numpy(), "weight cosine (count sketch)", -1, 1, "RdBu_r"),
              (cross_disagreement(labels, labels).numpy(), "test prediction disagreement", 0, None, "viridis"))
    for ax, (matrix, title, low, high, cmap) in zip(axes, panels):
        image = ax.imshow(matrix, vmin=low, vmax=high, cmap=cmap)
        for edge in edges:
            ax.axhline(edge, color="black", linewidth=0.6)
            ax.axvline(edge, color="black", linewidth=0.6)
        ax.set_xticks(centres)
        ax.set_xticklabels(list(sketches), rotation=60, fontsize=6)
        ax.set_yticks(centres)
        ax.set_yticklabels(list(sketches), fontsize=6)
        ax.grid(False)
        ax.set_title(title)
        fig.colorbar(image, ax=ax, shrink=0.7)
    fig.suptitle(f"{preset}, seed {seed}: every member of every ensemble run (sketch d = {SKETCH_DIM}); the runs of a "
                 "seed share one initial draw (DE member 0 = MCD's start)", fontsize=8)
    save(fig, f"fig_empirics_member_matrices_{preset}")
