"""Functional codimension (DE minus BE batch functional dimension) vs parameter codimension, by activation.

Reads results/theory/fdim.json. Certified (filled markers): one-hidden-layer ReLU MLPs have functional codim =
parameter codim; linear MLPs have the much smaller closed form (n−1)·max(0, k(n−L) − L(n−1)) (0 when BE fills the
function space). Not certified: tanh rows are float ranks (squares, filled); two-hidden-layer ReLU rows whose modular
ranks stay below the proved bounds are drawn as vertical bars from the smallest to the largest functional codim the
bounds allow — they do NOT show functional codim = parameter codim.
"""
import numpy as np

from style import COLUMN_WIDTH, figure, load_json, save

data = load_json("theory/fdim.json")
styles = {"tanh": ("s", "C2", 30), "relu": ("o", "C0", 10), "identity": ("^", "C3", 14)}  # relu drawn over tanh
fig, ax = figure(COLUMN_WIDTH, 2.7)
top = max(row["parameter_codim"] for row in data["rows"])
ax.plot([0, top], [0, top], color="black", linewidth=0.8, linestyle="--", label="functional = parameter codim")
for activation, (marker, color, size) in styles.items():
    rows = [row for row in data["rows"] if row["activation"] == activation]
    exact = np.array([row["certified"] or row["be_status"] == "float" for row in rows])
    x = np.array([row["parameter_codim"] for row in rows])
    y = np.array([row["functional_codim"] for row in rows])
    label = {"tanh": "tanh (float rank)", "relu": "ReLU (certified)", "identity": "linear (certified)"}[activation]
    ax.scatter(x[exact], y[exact], marker=marker, color=color, s=size, label=label)
    if (~exact).any():
        low = np.array([max(0, row["de_lower"] - row["be_upper"]) for row in rows])[~exact]
        high = np.array([row["de_upper"] - row["be_lower"] for row in rows])[~exact]
        ax.vlines(x[~exact], low, high, color=color, linewidth=1.5, alpha=0.6,
                  label=f"{'ReLU' if activation == 'relu' else activation}, 2 hidden layers: bounds only")
ax.set_xscale("symlog", linthresh=1)
ax.set_yscale("symlog", linthresh=1)
ax.set_xlabel("parameter codim $kP - \\dim\\mathrm{Im}\\,\\Phi$")
ax.set_ylabel("functional codim $\\mathrm{fdim}_{DE} - \\mathrm{fdim}_{BE}$")
ax.legend(loc="upper left", fontsize=5.5)
save(fig, "fig_theory_fdim")
