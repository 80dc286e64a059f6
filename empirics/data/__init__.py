"""Data: image data sets, splits, shift and OOD pairs (``datasets``), seeded corruptions (``corruptions``) and the
regression data sets with their Gaussian metrics (``regression``)."""
