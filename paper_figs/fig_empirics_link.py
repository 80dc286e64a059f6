"""Parameter-space vs function-space diversity over every trained ensemble of a study, with Spearman's ρ and its CI."""
from empirics_results import ensemble_runs, metric, studies, summary
from style import figure, save


def rho_text(head: dict) -> str:
    return "undefined" if head["rho"] is None else f"{head['rho']:.2f} [{head['ci_low']:.2f}, {head['ci_high']:.2f}]"


for preset in studies():
    study = summary(preset)
    head = study["link"]["headline"]
    fig, ax = figure(height=2.6)
    for run in ensemble_runs(study):
        x, y = metric(study, run, head["parameter_key"]), metric(study, run, head["function_key"])
        if x and y:
            ax.scatter(x["values"], y["values"], label=run, s=12)
    title = f"Spearman ρ = {rho_text(head)}, n = {head['n']}"
    if "link_without_mc_dropout" in study:
        without = study["link_without_mc_dropout"]["headline"]
        title += f"\nwithout MC Dropout: ρ = {rho_text(without)}, n = {without['n']}"
    ax.set_title(title)
    ax.set_xlabel(head["parameter"])
    ax.set_ylabel(head["function"])
    ax.legend(fontsize=5.5, ncol=2)
    save(fig, f"fig_empirics_link_{preset}")
