"""OOD ROC curves (OOD = positive) of each method, score −max p̄ and, for ensembles, the mutual information."""
from empirics_results import DIVERSITY, classification_study, first_seed, run_file, studies, summary
from style import FULL_WIDTH, figure, save

SCORES = (("max_prob", "score: −max p̄"), ("mutual_information", "score: mutual information"))
INSET_LEGEND_RUNS = 8  # more runs than this: the legends go below the panels, and the figure grows to hold them

for preset in studies():
    study = summary(preset)
    if not classification_study(study):
        continue
    many = len(study["runs"]) > INSET_LEGEND_RUNS
    fig, axes = figure(width=FULL_WIDTH, height=2.6 + (0.06 * len(study["runs"]) if many else 0), ncols=2, sharey=True)
    for ax, (score, title) in zip(axes, SCORES):
        ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=0.8, label="chance")
        for run in study["runs"]:
            curves = run_file(preset, run, first_seed(study, run), DIVERSITY)["curves"]["roc"]
            if score in curves:
                auroc = study["runs"][run]["metrics"].get(f"ood/{score}/auroc")
                label = run if auroc is None else f"{run} (AUROC {auroc['mean']:.3f})"
                ax.plot(curves[score]["fpr"], curves[score]["tpr"], label=label)
        ax.set_title(title)
        ax.set_xlabel("false-positive rate")
    axes[0].set_ylabel("true-positive rate")
    for ax in axes:
        ax.legend(fontsize=5.5, **({"loc": "upper center", "bbox_to_anchor": (0.5, -0.18), "ncol": 2} if many else {}))
    save(fig, f"fig_empirics_roc_{preset}")
