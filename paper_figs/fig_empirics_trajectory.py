"""Diversity trajectory of the studies that record it (``trajectory = true``): MI under shift, member accuracy under
shift, member weight cosine and relative distance to the rank-1 BE set after every epoch, mean ± std over seeds."""
from empirics_results import studies, summary
from style import FULL_WIDTH, figure, save

PANELS = (("traj/shift/mutual_information", "MI under shift"), ("traj/shift/members_mean/accuracy",
                                                                "member accuracy under shift"),
          ("traj/weights/mean_cosine", "member weight cosine"),
          ("traj/distance/rank1/relative_residual", "rel. distance to rank-1 BE set"))


def series(run_metrics: dict, key: str) -> tuple[list[int], list[float], list[float]]:
    epochs = sorted(int(name.rsplit("@", 1)[1]) for name in run_metrics if name.startswith(f"{key}@"))
    return (epochs, [run_metrics[f"{key}@{e}"]["mean"] for e in epochs],
            [run_metrics[f"{key}@{e}"]["std"] for e in epochs])


for preset in studies():
    study = summary(preset)
    runs = [run for run, entry in study["runs"].items() if any(k.startswith("traj/") for k in entry["metrics"])]
    if not runs:
        continue
    fig, axes = figure(width=FULL_WIDTH, height=4.4, nrows=2, ncols=2)
    for ax, (key, label) in zip(axes.flat, PANELS):
        for run in runs:
            epochs, means, stds = series(study["runs"][run]["metrics"], key)
            if epochs:
                ax.errorbar(epochs, means, yerr=stds, marker=".", capsize=1.5, label=run)
        ax.set_xscale("log")
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
    axes.flat[0].legend(fontsize=5.5, ncol=2)
    save(fig, f"fig_empirics_trajectory_{preset}")
