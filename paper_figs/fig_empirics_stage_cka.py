"""Linear CKA between members of each stage's pooled output (ResNet studies), mean ± std over seeds, per run."""
from empirics_results import ensemble_runs, metric, studies, summary
from style import COLUMN_WIDTH, figure, save

STAGE_KEY = "features/test_stages/stage{}/mean_cka"
STAGES = (1, 2, 3, 4)

for preset in studies():
    study = summary(preset)
    runs = [run for run in ensemble_runs(study) if metric(study, run, STAGE_KEY.format(1))]
    if not runs:
        continue
    fig, ax = figure(width=COLUMN_WIDTH, height=2.4)
    for run in runs:
        values = [metric(study, run, STAGE_KEY.format(stage)) for stage in STAGES]
        ax.errorbar(STAGES, [v["mean"] for v in values], yerr=[v["std"] for v in values], label=run, marker="o",
                    capsize=1.5)
    ax.set_xticks(STAGES)
    ax.set_xlabel("ResNet stage")
    ax.set_ylabel("member linear CKA (test inputs)")
    ax.set_ylim(top=1.02)
    ax.legend(fontsize=6)
    ax.set_title(f"{preset}: representation similarity by depth")
    save(fig, f"fig_empirics_stage_cka_{preset}")
