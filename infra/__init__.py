"""Infrastructure outside the maths, shared by ``theory`` and ``empirics``: user-facing errors (``infra.errors``),
files that never lose data (``infra.files``), provenance of every result (``infra.provenance``), the command-line
conventions (``infra.cli``) and stop signals handled for a block (``infra.signals``)."""
