"""Weight geometry against depth (ResNet studies): per-layer member cosine and relative distance to the rank-1 BE
set, mean over seeds, for every ensemble run, in the network's layer order."""
import numpy as np

from empirics_results import DIVERSITY, ensemble_runs, run_file, studies, summary
from style import FULL_WIDTH, figure, save

MIN_LAYERS = 8  # the MLP studies have 4 layers: their per-layer values are in the cosine heatmaps instead
PANELS = (("mean_cosine", "weights", "member weight cosine"),
          ("rank1/relative_residual", "distance", "rel. distance to rank-1 BE set\n(of the run's own variant)"))


def per_layer(preset: str, run: str, seeds: list[int], group: str, key: str) -> tuple[list[str], np.ndarray]:
    """Layer names (network order) and the (seeds, layers) values of ``scalars[group][layer][key]``."""
    tables = [run_file(preset, run, seed, DIVERSITY)["scalars"][group] for seed in seeds]
    layers = [name for name in tables[0] if name != "network"]
    return layers, np.array([[table[layer][key] for layer in layers] for table in tables])


for preset in studies():
    study = summary(preset)
    runs = [run for run in ensemble_runs(study) if "weights" in run_file(preset, run, study["runs"][run]["seeds"][0],
                                                                          DIVERSITY)["scalars"]]
    if not runs:
        continue
    layers, _ = per_layer(preset, runs[0], study["runs"][runs[0]]["seeds"], "weights", "mean_cosine")
    if len(layers) < MIN_LAYERS:
        continue
    fig, axes = figure(width=FULL_WIDTH, height=3.2, ncols=2, layout="constrained")
    for ax, (key, group, label) in zip(axes, PANELS):
        for run in runs:
            names, values = per_layer(preset, run, study["runs"][run]["seeds"], group, key)
            ax.errorbar(range(len(names)), values.mean(0), yerr=values.std(0, ddof=1) if len(values) > 1 else None,
                        label=run, marker="o", capsize=1.5)
        ax.set_xticks(range(len(layers)))
        ax.set_xticklabels(layers, rotation=90, fontsize=5)
        ax.set_ylabel(label)
        ax.set_xlabel("layer (input → output)")
    fig.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center", ncol=6, fontsize=6)
    fig.suptitle(f"{preset}: weight geometry against depth (mean ± std over seeds; a layer the members share, "
                 "e.g. a plain shortcut, sits at cosine 1, distance 0)", fontsize=8)
    save(fig, f"fig_empirics_depth_{preset}")
