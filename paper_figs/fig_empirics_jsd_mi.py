"""Mutual information and mean pairwise JSD of the members per method and split (mean ± std over seeds)."""
import numpy as np

from empirics_results import classification_study, ensemble_runs, metric, studies, summary
from style import FULL_WIDTH, figure, save

SPLITS = ("test", "shift", "ood")
QUANTITIES = (("mutual_information", "mutual information (nats)"), ("pairwise_jsd", "mean pairwise JSD (nats)"))

for preset in studies():
    study = summary(preset)
    if not classification_study(study):
        continue
    runs = ensemble_runs(study)
    fig, axes = figure(width=FULL_WIDTH, height=2.7, ncols=2)
    width = 0.8 / len(runs)
    for ax, (quantity, label) in zip(axes, QUANTITIES):
        for index, run in enumerate(runs):
            stats = [metric(study, run, f"{split}/{quantity}") for split in SPLITS]
            means = [s["mean"] if s else np.nan for s in stats]
            stds = [s["std"] if s else 0.0 for s in stats]
            ax.bar(np.arange(len(SPLITS)) + (index - (len(runs) - 1) / 2) * width, means, width, yerr=stds,
                   label=run, capsize=1.5)
        ax.set_xticks(range(len(SPLITS)), ["test", "shift", "OOD"])
        ax.set_ylabel(label)
    fig.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center", ncol=5, fontsize=6)
    save(fig, f"fig_empirics_jsd_mi_{preset}")
