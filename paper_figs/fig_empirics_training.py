"""Training curves: validation NLL of the ensemble per epoch for every run (first seed)."""
from empirics_results import METRICS, first_seed, run_file, studies, summary
from style import FULL_WIDTH, figure, save

for preset in studies():
    study = summary(preset)
    fig, axes = figure(width=FULL_WIDTH, height=2.4, ncols=2)
    for run in study["runs"]:
        epochs = run_file(preset, run, first_seed(study, run), METRICS)["epochs"]
        steps = [entry["epoch"] for entry in epochs]
        axes[0].plot(steps, [entry["train/loss"] for entry in epochs], marker=".", label=run)
        axes[1].plot(steps, [entry.get("val/ensemble/nll") for entry in epochs], marker=".", label=run)
    axes[0].set_ylabel("training loss (mean member CE)")
    axes[1].set_ylabel("validation NLL (ensemble)")
    for ax in axes:
        ax.set_xlabel("epoch")
    axes[1].legend(fontsize=5.5, ncol=2)
    save(fig, f"fig_empirics_training_{preset}")
