"""ε-tube probabilities P(d(X, BE) < ε), X ~ N(0, I), on log-log axes, with fitted slopes vs codimension.

Reads results/theory/tube.json. Claim: the BE set has codimension (k−1)(m−1)(n−1), seen as the slope of log P.
"""
import numpy as np
from style import COLUMN_WIDTH, figure, load_json, save

data = load_json("theory/tube.json")
fig, ax = figure(COLUMN_WIDTH, 2.4)
for case in data["cases"]:
    eps, prob = np.array(case["epsilons"]), np.array(case["probabilities"])
    k, m, n = case["case"]
    lo, hi = case["slope_ci"]
    ax.plot(eps, prob, marker="o",
            label=f"$({k},{m},{n})$ codim {case['codim']}: slope {case['slope']:.3f} [{lo:.3f}, {hi:.3f}]")
ax.set_xscale("log")
ax.set_yscale("log")
ax.set_xlabel(r"tube radius $\varepsilon$ (log-contrast sup-norm)")
ax.set_ylabel(r"$P(d(X,\mathrm{BE}) < \varepsilon)$")
ax.legend(loc="lower right", fontsize=5.5, title="$(k,m,n)$, 95% bootstrap CI", title_fontsize=6)
save(fig, "fig_theory_tube")
