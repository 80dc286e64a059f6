"""Codimension fraction codim/(kmn) of the rank-1 dense BE set over (m, n), for k = 2, 4, 8.

Reads results/theory/codim_fraction.json (``python -m theory results``). Claim: rank-1 BE is measure zero iff
k, m, n >= 2, and the unreached fraction (k−1)(m−1)(n−1)/(kmn) tends to 1 − 1/k.
"""
import numpy as np

from style import COLUMN_WIDTH, figure, load_json, save

data = load_json("theory/codim_fraction.json")
sizes = data["sizes"]
fig, axes = figure(COLUMN_WIDTH, 1.45, ncols=len(data["members"]), sharey=True)
for ax, k in zip(axes, data["members"]):
    image = ax.imshow(np.array(data["fraction"][str(k)]), origin="lower", vmin=0, vmax=1, cmap="viridis",
                      extent=(sizes[0] - 0.5, sizes[-1] + 0.5, sizes[0] - 0.5, sizes[-1] + 0.5))
    ax.set_title(f"$k={k}$")
    ax.set_xlabel("$n$ (in)")
    ax.set_xticks([1, 8, 16])
    ax.set_yticks([1, 8, 16])
    ax.grid(False)
axes[0].set_ylabel("$m$ (out)")
fig.colorbar(image, ax=axes, shrink=0.9, label=r"codim$/(kmn)$")
save(fig, "fig_theory_codim_fraction")
