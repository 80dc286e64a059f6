"""Regression calibration: observed coverage of the ensemble's central intervals against their nominal level, on test
and shifted data, per run (first seed; the curves ``empirics.analysis.diversity`` saved). On the diagonal = calibrated;
below = over-confident."""
from empirics_results import calibration_figure, classification_study, studies, summary


def coverage_curve(diversity: dict, split: str) -> tuple[list, list]:
    curve = diversity["curves"]["coverage"][split]
    return curve["level"], curve["coverage"]


for preset in studies():
    study = summary(preset)
    if not classification_study(study):
        calibration_figure(preset, study, coverage_curve,
                           ("calibrated", "nominal level of the central interval", "observed coverage"),
                           f"fig_empirics_coverage_{preset}")
