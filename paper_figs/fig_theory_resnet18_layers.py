"""Per-layer fraction of the Deep-Ensemble dimension reached by rank-1 BE in a CIFAR ResNet-18 (1 input channel), k = 4.

Reads results/theory/resnet18_layers.json. Claim: every perturbed layer reaches only slightly more than 1/k of its
DE dimension (shared 1×1 shortcuts exactly 1/k); the network total is printed in the title.
"""
import numpy as np
from matplotlib.patches import Patch

from style import COLUMN_WIDTH, figure, load_json, save

data = load_json("theory/resnet18_layers.json")
layers = data["layers"]
k = data["members"]
fraction = np.array([layer["fraction"] for layer in layers])
colors = ["C1" if layer["role"] == "shared" else "C0" for layer in layers]
fig, ax = figure(COLUMN_WIDTH, 2.2)
ax.bar(np.arange(len(layers)), fraction, color=colors)
line = ax.axhline(1 / k, color="black", linestyle="--", linewidth=0.8)
ax.set_xticks(np.arange(len(layers))[::3])
ax.set_xticklabels([str(i) for i in range(len(layers))][::3])
ax.set_xlabel("layer index (conv and linear, input to output)")
ax.set_ylabel(r"$\dim\mathrm{Im}\,\Phi / (kD)$")
ax.set_ylim(0, 1)
ax.set_title(f"$k={k}$: network reaches {data['totals']['fraction_reached']:.4f} of the DE dimension")
ax.legend([line, Patch(color="C0"), Patch(color="C1")], [f"$1/k = {1 / k:.2f}$", "perturbed (BE)",
           "shared 1×1 shortcut"], loc="upper right", fontsize=6)
save(fig, "fig_theory_resnet18_layers")
