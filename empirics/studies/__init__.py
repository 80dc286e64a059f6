"""Studies: presets run as grids of runs (``runner``), on a cluster (``executors``), and their reports (``report``,
with the paper's claims tested in ``paper_claims`` and precision parity in ``parity``)."""
