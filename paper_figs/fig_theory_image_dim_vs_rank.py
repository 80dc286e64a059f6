"""Image dimension of rank-r dense BE vs r, relative to the Deep-Ensemble dimension kmn, with the filling rank.

Reads results/theory/image_dim_vs_rank.json. Claim: rank-r BE fills R^{kmn} iff k(m−r)(n−r) <= (m−1)(n−1).
"""
from style import COLUMN_WIDTH, figure, load_json, save

data = load_json("theory/image_dim_vs_rank.json")
fig, ax = figure(COLUMN_WIDTH, 2.3)
ax.axhline(1.0, color="black", linestyle="--", linewidth=0.9, label="Deep Ensemble ($kmn$)")
for case in data["cases"]:
    fraction = [dim / case["de_dim"] for dim in case["image_dim"]]
    line, = ax.plot(case["ranks"], fraction, marker="o",
                    label=f"$m,n,k={case['m']},{case['n']},{case['k']}$; fills at $r={case['filling_rank']}$")
    r_fill = case["filling_rank"]
    ax.plot([r_fill], [fraction[r_fill - 1]], marker="*", markersize=9, color=line.get_color(), linestyle="none")
ax.set_xscale("log", base=2)
ax.set_xticks([1, 2, 4, 8, 16, 32], ["1", "2", "4", "8", "16", "32"])
ax.set_xlabel("BE rank $r$")
ax.set_ylabel(r"$\dim \mathrm{Im}\,\Phi_r / (kmn)$")
ax.set_ylim(0, 1.08)
ax.legend(loc="lower right", fontsize=6)
save(fig, "fig_theory_image_dim_vs_rank")
