"""The diversity trajectory of a training run: the same few diversity and accuracy measures after every epoch.

With ``trajectory = true`` in a run's config, ``empirics.runs.train`` calls ``TrajectoryProbe.measure`` after each epoch
and stores its values in that epoch's entry of ``metrics.json`` under ``traj/...`` keys:

* ``traj/shift/mutual_information``, ``traj/shift/disagreement`` — on a fixed, seeded subset of ``trajectory_samples``
  shifted test images (the run's corruption families at its severity, each applied to an evaluation subset of the
  clean test set; ``empirics.data.datasets.shifted_test_set``);
* ``traj/shift/members_mean/accuracy``, ``traj/shift/ensemble/accuracy`` — on the same images (accuracy next to
  diversity);
* ``traj/weights/mean_cosine`` — mean pairwise cosine of the members' whole-network weights
  (``empirics.analysis.diversity``);
* ``traj/distance/rank1/relative_residual`` — relative distance of the member tuple to the rank-1 BE set, fitted with
  ``TRAJECTORY_MAX_ITER`` ALS sweeps from one start (an upper bound, cheaper than the end-of-run fit).

Cost-aware: subsets, one ALS start; the epoch's validation pass is not repeated. The probe saves and restores torch's
global RNG, so a run with the trajectory trains to the same numbers as one without it.
With a constant learning rate and no early stopping (``patience = 0``, ``schedule = "none"``) the model after epoch e
of an E-epoch run *is* the e-epoch run of the same seed (same init, same shuffles), so one long run gives every shorter
fixed budget (tested in ``tests/empirics/test_trajectory.py``).
"""
from __future__ import annotations

import torch

from empirics.analysis import metrics
from empirics.data import datasets as data
from empirics.models.ensembles import EnsembleModel, member_weight_tuples
from empirics.runs.config import Config
from empirics.runs.tasks import CLASSIFICATION, data_root

TRAJECTORY_PREFIX = "traj/"
TRAJECTORY_MAX_ITER = 30  # ALS sweeps of the per-epoch distance fit (the end-of-run fit uses the preset's)


class TrajectoryProbe:
    """Holds the fixed shifted subset of a run and measures a model on it (``measure``)."""

    def __init__(self, config: Config) -> None:
        self.config = config
        # Each family corrupts only an evaluation subset of the clean test set (at most trajectory_samples images,
        # within the run's n_eval subset when that is smaller), then trajectory_samples of the pooled images are kept.
        per_family = min(config.n_eval, config.trajectory_samples) if config.n_eval else config.trajectory_samples
        images, labels, _ = data.shifted_test_set(config.dataset, data_root(config),
                                                  list(config.shift_families) or None, config.shift_severity,
                                                  config.seed, config.download, per_family)
        chosen = torch.randperm(len(images), generator=torch.Generator().manual_seed(config.seed))
        chosen = chosen[:config.trajectory_samples]
        self.images, self.labels = images[chosen], labels[chosen]

    def measure(self, model: EnsembleModel, device: torch.device) -> dict[str, float]:
        """The ``traj/*`` values of ``model`` now (members with k >= 2; a one-member model gets accuracy only)."""
        from empirics.analysis import diversity

        rng = torch.get_rng_state()
        was_training = model.training
        try:
            probs = CLASSIFICATION.predict(model, self.images, self.config.eval_batch_size, device, "trajectory")
            found = metrics.member_and_ensemble_metrics(probs, self.labels, "shift")
            out = {f"{TRAJECTORY_PREFIX}shift/members_mean/accuracy": found["shift/members_mean/accuracy"],
                   f"{TRAJECTORY_PREFIX}shift/ensemble/accuracy": found["shift/ensemble/accuracy"]}
            if probs.shape[0] >= 2:
                out[f"{TRAJECTORY_PREFIX}shift/mutual_information"] = metrics.mutual_information(probs).mean().item()
                out[f"{TRAJECTORY_PREFIX}shift/disagreement"] = metrics.disagreement(probs)
                weights = {name: value.cpu() for name, value in member_weight_tuples(
                    model, torch.Generator().manual_seed(self.config.seed)).items()}
                out[f"{TRAJECTORY_PREFIX}weights/mean_cosine"] = diversity.mean_off_diagonal(
                    diversity.pairwise_cosine(diversity.network_weights(weights)))
                distance = diversity.distance_to_be_sets(weights, [1], self.config.variant, starts=1,
                                                         max_iter=TRAJECTORY_MAX_ITER, seed=self.config.seed)
                out[f"{TRAJECTORY_PREFIX}distance/rank1/relative_residual"] = \
                    distance[diversity.NETWORK]["rank1/relative_residual"]
            return out
        finally:
            torch.set_rng_state(rng)
            model.train(was_training)
