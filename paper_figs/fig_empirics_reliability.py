"""Reliability diagrams (accuracy vs confidence, 15 bins; empty bins left out) of each method's ensemble on test and
shifted data."""
import numpy as np

from empirics_results import calibration_figure, classification_study, studies, summary


def reliability_curve(diversity: dict, split: str) -> tuple[np.ndarray, np.ndarray]:
    curve = diversity["curves"]["reliability"][split]
    filled = np.array(curve["count"]) > 0
    return np.array(curve["confidence"])[filled], np.array(curve["accuracy"])[filled]


for preset in studies():
    study = summary(preset)
    if classification_study(study):
        calibration_figure(preset, study, reliability_curve,
                           ("perfect calibration", "confidence (max p̄)", "accuracy"),
                           f"fig_empirics_reliability_{preset}")
