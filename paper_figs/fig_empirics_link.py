"""Parameter-space vs function-space diversity over every trained ensemble of a study, with Spearman's ρ, its
cluster-bootstrap CI (configurations, then seeds) and the within-configuration ρ."""
from empirics_results import ensemble_runs, metric, studies, summary
from style import figure, save


def rho_text(head: dict) -> str:
    """Pooled ρ [cluster-bootstrap CI] and, when recorded, the within-configuration ρ."""
    if head["rho"] is None:
        return "undefined"
    text = f"{head['rho']:.2f} [{head['ci_low']:.2f}, {head['ci_high']:.2f}]"
    within = head.get("within") or {}
    if within.get("rho") is not None:
        text += f"; within configs {within['rho']:.2f} [{within['ci_low']:.2f}, {within['ci_high']:.2f}]"
    return text


for preset in studies():
    study = summary(preset)
    head = study["link"]["headline"]
    fig, ax = figure(height=2.6)
    for run in ensemble_runs(study):
        x, y = metric(study, run, head["parameter_key"]), metric(study, run, head["function_key"])
        if x and y:
            ax.scatter(x["values"], y["values"], label=run, s=12)
    title = f"Spearman ρ = {rho_text(head)}, n = {head['n']} (cluster CI)"
    if "link_without_mc_dropout" in study:
        without = study["link_without_mc_dropout"]["headline"]
        title += f"\nwithout MC Dropout: ρ = {rho_text(without)}, n = {without['n']}"
    ax.set_title(title)
    ax.set_xlabel(head["parameter"])
    ax.set_ylabel(head["function"])
    ax.legend(fontsize=5.5, ncol=2)
    save(fig, f"fig_empirics_link_{preset}")
