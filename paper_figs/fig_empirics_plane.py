"""Diversity–accuracy plane (Fort et al. 2019): disagreement under shift against member error under shift, one point
per run and seed, for every ensemble of a study (a more diverse ensemble is only better if its members stay accurate)."""
from empirics_results import ensemble_runs, metric, studies, summary
from style import figure, save

X_KEY, Y_KEY = "shift/members_mean/accuracy", "shift/disagreement"

for preset in studies():
    study = summary(preset)
    fig, ax = figure(height=2.8)
    for run in ensemble_runs(study):
        accuracy, disagreement = metric(study, run, X_KEY), metric(study, run, Y_KEY)
        if accuracy and disagreement:
            ax.scatter([1 - value for value in accuracy["values"]], disagreement["values"], label=run, s=12)
    ax.set_xlabel("member error under shift (1 − mean member accuracy)")
    ax.set_ylabel("disagreement under shift")
    ax.set_title(f"{preset}: diversity vs member error (one point per seed)")
    ax.legend(fontsize=5, ncol=2)
    save(fig, f"fig_empirics_plane_{preset}")
