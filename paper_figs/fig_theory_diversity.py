"""Second-order diversity link at trained points of the paper-mnist MLP recipe: predicted vs measured mutual
information and logit variance (docs/proofs.md §6), at init and after 1, 3 and 8 epochs, and for random-sign BE.

Reads results/theory/trained_points.json. Claim: member diversity is, to second order, a quadratic form in the
fast-weight deviations weighted by the network's Jacobian. Fit: least-squares slope of log(predicted) on
log(measured) over the normal-init points (1 = proportional), shown with the y = x line; random-sign points (open
markers) are where the expansion breaks (members far from their mean fast weights).
"""
import numpy as np

from style import FULL_WIDTH, figure, load_json, save

data = load_json("theory/trained_points.json")
rows = data["rows"]
fig, axes = figure(FULL_WIDTH, 2.8, ncols=2)
for ax, key, label in ((axes[0], "mi", "mutual information (nats)"), (axes[1], "variance", "logit variance")):
    normal = [r for r in rows if r["init"] == "normal"]
    sign = [r for r in rows if r["init"] != "normal"]
    measured = np.array([r["link"][f"{key}_measured"] for r in normal])
    predicted = np.array([r["link"][f"{key}_predicted"] for r in normal])
    slope, intercept = np.polyfit(np.log(measured), np.log(predicted), 1)
    ratio = predicted / measured
    for r, x, y in zip(normal, measured, predicted):
        ax.scatter(x, y, color="C0", s=14)
        ax.annotate(f"{r['stage'] if r['stage'] == 'init' else str(r['epochs']) + ' ep'}", (x, y), fontsize=5.5,
                    xytext=(3, -6), textcoords="offset points")
    for r in sign:
        x, y = r["link"][f"{key}_measured"], r["link"][f"{key}_predicted"]
        ax.scatter(x, y, facecolors="none", edgecolors="C3", s=18)
        ax.annotate(f"random sign, {r['stage']}", (x, y), fontsize=5.5, xytext=(3, 3), textcoords="offset points")
    values = np.concatenate([measured, predicted, [r["link"][f"{key}_{s}"] for r in sign for s in ("measured", "predicted")]])
    span = [values.min() / 2, values.max() * 2]
    ax.plot(span, span, color="black", linewidth=0.8, linestyle="--", label="predicted = measured")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(f"measured {label}")
    ax.set_ylabel("second-order prediction")
    ax.set_title(f"normal init: log-log fit slope {slope:.2f}\npredicted/measured {ratio.min():.2f}–{ratio.max():.2f}",
                 fontsize=7)
    ax.legend(loc="upper left", fontsize=6)
save(fig, "fig_theory_diversity")
