"""Empirics engine: BatchEnsemble layers of any rank and variant, ensembles, real data, resumable training, metrics.

Modules: ``layers`` (BE Linear/Conv2d, per-member BatchNorm), ``models`` (MLP, ResNet-18, the four methods, member
weights), ``config`` (typed hyper-parameters), ``train`` / ``evaluate`` (run directories), ``data``,
``corruptions``, ``metrics``; ``python -m empirics`` is the command line (``empirics.cli``).
"""
