"""Training curves: training loss and validation NLL of the ensemble per epoch for every run (first seed), one row of
panels per data set (each has its scale). The loss is the mean member cross-entropy of a classifier, the mean member
Gaussian NLL of a regression study."""
from empirics_results import METRICS, classification_study, first_seed, run_file, runs_by_dataset, studies, summary
from style import FULL_WIDTH, figure, save

LOSS = {True: "training loss (mean member CE)", False: "training loss (mean member Gaussian NLL)"}

for preset in studies():
    study = summary(preset)
    datasets = runs_by_dataset(study)
    fig, axes = figure(width=FULL_WIDTH, height=2.4 * len(datasets), nrows=len(datasets), ncols=2, squeeze=False)
    for row, (dataset, runs) in zip(axes, datasets.items()):
        for run in runs:
            epochs = run_file(preset, run, first_seed(study, run), METRICS)["epochs"]
            steps = [entry["epoch"] for entry in epochs]
            row[0].plot(steps, [entry["train/loss"] for entry in epochs], marker=".", label=run)
            row[1].plot(steps, [entry.get("val/ensemble/nll") for entry in epochs], marker=".", label=run)
        row[0].set_ylabel(LOSS[classification_study(study)])
        row[1].set_ylabel("validation NLL (ensemble)")
        if len(datasets) > 1:
            row[0].set_title(dataset, fontsize=7)
        for ax in row:
            ax.set_xlabel("epoch")
        row[1].legend(fontsize=5.5, ncol=2)
    save(fig, f"fig_empirics_training_{preset}")
