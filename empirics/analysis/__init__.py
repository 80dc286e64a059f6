"""Measurements of trained ensembles: metrics (``metrics``), diversity geometry and the geometry↔diversity link
(``diversity``), per-epoch trajectories (``trajectory``) and statistics that respect the design (``effects``)."""
