"""One run: its config (``config``), its task (``tasks``), its folder (``folder``: file names, loading, saving, the
evaluation sets predicted once), resumable training (``train``) and evaluation (``evaluate``)."""
