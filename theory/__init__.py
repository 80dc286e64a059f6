"""Certified theory of BatchEnsemble: which part of a Deep Ensemble's parameter space it reaches.

Modules, one per mathematical object:

- ``batchensemble``: the BatchEnsemble weight map (dense and conv, any rank, members and variant) and its Jacobian.
- ``records``: atomic result files with provenance (config, seed, versions, git commit).
- ``cli`` / ``claims``: the ``python -m theory`` command line and the claims registry run by ``python -m theory check``.
"""
