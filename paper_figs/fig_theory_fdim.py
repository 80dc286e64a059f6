"""Functional codimension (DE minus BE batch functional dimension) vs parameter codimension, by activation.

Reads results/theory/fdim.json. Claim: for ReLU (and tanh) MLPs the functional codim equals the parameter codim;
for deep linear nets it is far smaller (often 0). Filled markers: both ranks certified (or float for tanh).
"""
import numpy as np
from style import COLUMN_WIDTH, figure, load_json, save

data = load_json("theory/fdim.json")
styles = {"tanh": ("s", "C2", 30), "relu": ("o", "C0", 10), "identity": ("^", "C3", 14)}  # relu drawn over tanh
fig, ax = figure(COLUMN_WIDTH, 2.5)
top = max(row["parameter_codim"] for row in data["rows"])
ax.plot([0, top], [0, top], color="black", linewidth=0.8, linestyle="--", label="functional = parameter codim")
for activation, (marker, color, size) in styles.items():
    rows = [row for row in data["rows"] if row["activation"] == activation]
    exact = np.array([row["certified"] or row["be_status"] == "float" for row in rows])
    x = np.array([row["parameter_codim"] for row in rows])
    y = np.array([row["functional_codim"] for row in rows])
    ax.scatter(x[exact], y[exact], marker=marker, color=color, s=size, label=f"{activation}")
    if (~exact).any():
        ax.scatter(x[~exact], y[~exact], marker=marker, facecolors="none", edgecolors=color, s=size,
                   label=f"{activation} (bounds not met)")
ax.set_xscale("symlog", linthresh=1)
ax.set_yscale("symlog", linthresh=1)
ax.set_xlabel("parameter codim $kP - \\dim\\mathrm{Im}\\,\\Phi$")
ax.set_ylabel("functional codim $\\mathrm{fdim}_{DE} - \\mathrm{fdim}_{BE}$")
ax.legend(loc="upper left", fontsize=6)
save(fig, "fig_theory_fdim")
