"""ε-tube probabilities P(d(X, BE) < ε), X ~ N(0, I), on log-log axes, with fitted slopes vs codimension.

Reads results/theory/tube.json. Claim: the BE set has codimension (k−1)(m−1)(n−1), seen as the slope of log P.
"""
import numpy as np
from style import COLUMN_WIDTH, figure, load_json, save

data = load_json("theory/tube.json")
fig, ax = figure(COLUMN_WIDTH, 3.2)
for case in data["cases"]:
    eps, prob = np.array(case["epsilons"]), np.array(case["probabilities"])
    k, m, n = case["case"]
    lo, hi = case["slope_ci"]
    ax.plot(eps, prob, marker="o", linestyle="--" if case["codim"] == 2 and (k, m, n) != (3, 2, 2) else "-",
            label=f"$({k},{m},{n})$ codim {case['codim']}: slope {case['slope']:.3f} [{lo:.3f}, {hi:.3f}]")
ax.set_xscale("log")
ax.set_yscale("log")
ax.set_xlabel(r"tube radius $\varepsilon$ (log-contrast sup-norm)")
ax.set_ylabel(r"$P(d(X,\mathrm{BE}) < \varepsilon)$")
# Below the axes, so no label covers a curve; (3,2,2) and (2,2,3) share codim 2 and nearly coincide (dashed).
ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.22), fontsize=5.5, title="$(k,m,n)$, 95% bootstrap CI",
          title_fontsize=6)
save(fig, "fig_theory_tube")
