"""ε-tube probabilities P(d(X, BE) < ε), X ~ N(0, I), on log-log axes: plain Monte Carlo with the Euclidean distance
(left, the evidence) beside the importance sampler (right, a consistency check only).

Reads results/theory/tube_plain.json and results/theory/tube.json. Claim: the rank-1 BE set has codimension
(k−1)(m−1)(n−1). Left: X ~ N(0, I), Euclidean distance by the ALS projection, indicator estimate: the fitted slope is
measured, and its 95% bootstrap CI is shown beside the codim. Right: the importance sampler's weights scale as
ε^codim by construction, so its slopes check the sampler, not the exponent.
"""
import numpy as np

from style import FULL_WIDTH, figure, load_json, save

plain = load_json("theory/tube_plain.json")
sampled = load_json("theory/tube.json")
fig, (left, right) = figure(FULL_WIDTH, 3.0, ncols=2)
for ax, data, xlabel, title in (
        (left, plain, r"$\varepsilon$ (Euclidean distance)", "plain Monte Carlo (measures the exponent)"),
        (right, sampled, r"$\varepsilon$ (log-contrast sup-norm)", "importance sampling (exponent built in)")):
    for index, case in enumerate(data["cases"]):
        eps, prob = np.array(case["epsilons"]), np.array(case["probabilities"])
        k, m, n = case["case"]
        lo, hi = case["slope_ci"]
        ax.plot(eps, prob, marker="o", color=f"C{index}",
                label=f"$({k},{m},{n})$ codim {case['codim']}: {case['slope']:.2f} [{lo:.2f}, {hi:.2f}]")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    ax.legend(loc="lower right", fontsize=5.5, title="slope, 95% bootstrap CI", title_fontsize=6)
left.set_ylabel(r"$P(d(X,\mathrm{BE}) < \varepsilon)$")
save(fig, "fig_theory_tube")
