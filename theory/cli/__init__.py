"""``python -m theory``: the entry point (``main``) and one module per group of subcommands (``dimension``:
``dim``/``network``; ``geometry``: ``distance``/``tube``/``fdim``; ``results``: the JSON the theory figures read)."""
