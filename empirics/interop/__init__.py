"""Diagnostics for users' own ensembles (``diagnose``): any model or checkpoint, measured with this project's
geometry and certified counts."""
