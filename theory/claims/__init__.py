"""The claims of the theory and their checks: the registry (``registry``: id, statement, kind, check) and one module
per part of the theory (``dimension``, ``geometry``, ``diversity``, ``proofs``); ``table`` renders the registry."""
