"""Parameter-space vs function-space diversity over every trained ensemble of a study, with Spearman's ρ, its
cluster-bootstrap CI (configurations, then seeds) and the within-configuration ρ; one panel per data set when the
study has several (their links are never pooled, ``empirics.studies.runner.link_analyses``)."""
from empirics.analysis.diversity import LINK, LINK_WITHOUT_MCD, link_key, link_strata
from empirics.studies.report import rho_cell

from empirics_results import ensemble_runs, metric, studies, summary
from style import COLUMN_WIDTH, figure, save


def rho_lines(head: dict, label: str) -> list[str]:
    """``label``'s pooled ρ [cluster-bootstrap CI] with its n, and on a second line, when recorded, the
    within-configuration ρ (no CI with too few configurations: ``empirics.analysis.effects.MIN_CLUSTERS``)."""
    if head["rho"] is None:
        return [f"{label}: ρ undefined"]
    within = head.get("within") or {}
    return [f"{label}: ρ = {rho_cell(head)}, n = {head['n']}"] + (
        [f"within configs ρ = {rho_cell(within)}"] if within.get("rho") is not None else [])


for preset in studies():
    study = summary(preset)
    strata = link_strata(study)
    fig, axes = figure(width=COLUMN_WIDTH * len(strata), height=2.6, ncols=len(strata), squeeze=False)
    for ax, stratum in zip(axes[0], strata):
        head = study[link_key(LINK, stratum)]["headline"]
        for run in ensemble_runs(study):
            if stratum and study["runs"][run]["fields"].get("dataset") != stratum:
                continue
            x, y = metric(study, run, head["parameter_key"]), metric(study, run, head["function_key"])
            if x and y:
                ax.scatter(x["values"], y["values"], label=run, s=12)
        lines = ([stratum] if stratum else []) + rho_lines(head, "Spearman (cluster CI)")
        if link_key(LINK_WITHOUT_MCD, stratum) in study:
            lines += rho_lines(study[link_key(LINK_WITHOUT_MCD, stratum)]["headline"], "without MC Dropout")
        ax.set_title("\n".join(lines), fontsize=6)
        ax.set_xlabel(head["parameter"])
        ax.set_ylabel(head["function"])
        ax.legend(fontsize=5.5, ncol=2)
    save(fig, f"fig_empirics_link_{preset}")
