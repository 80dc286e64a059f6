"""Diversity–accuracy plane (Fort et al. 2019): member diversity under shift against member error under shift, one
point per run and seed, for every ensemble of a study (a more diverse ensemble is only better if its members stay
accurate). Classification: disagreement against 1 − mean member accuracy; regression (Gaussian heads): the epistemic
variance (variance of the member means) against the mean member RMSE, one panel per data set (each has its scale)."""
from empirics_results import classification_study, ensemble_runs, metric, runs_by_dataset, studies, summary
from style import COLUMN_WIDTH, figure, save

AXES = {True: ("shift/members_mean/accuracy", "shift/disagreement",
               "member error under shift (1 − mean member accuracy)", "disagreement under shift"),
        False: ("shift/members_mean/rmse", "shift/epistemic_variance",
                "mean member RMSE under shift", "epistemic variance under shift")}


def error(value: float, classification: bool) -> float:
    return 1 - value if classification else value


for preset in studies():
    study = summary(preset)
    classification = classification_study(study)
    x_key, y_key, x_label, y_label = AXES[classification]
    datasets = runs_by_dataset(study)
    fig, axes = figure(height=2.8, width=COLUMN_WIDTH * len(datasets), ncols=len(datasets), squeeze=False)
    for ax, (dataset, runs) in zip(axes[0], datasets.items()):
        for run in (run for run in ensemble_runs(study) if run in runs):
            x, y = metric(study, run, x_key), metric(study, run, y_key)
            if x and y:
                ax.scatter([error(value, classification) for value in x["values"]], y["values"], label=run, s=12)
        ax.set_xlabel(x_label)
        ax.set_ylabel(y_label)
        ax.set_title(f"{preset}{': ' + dataset if len(datasets) > 1 else ''}: diversity vs member error "
                     "(one point per seed)", fontsize=7)
        ax.legend(fontsize=5, ncol=2)
    save(fig, f"fig_empirics_plane_{preset}")
