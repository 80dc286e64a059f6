"""The models: BatchEnsemble layers of any rank and variant (``layers``), the networks built from one layer factory
(``networks``: MLP, ResNet-18; ``attention``: a small ViT), the four methods behind one ensemble interface
(``ensembles``) and compute precision (``precision``)."""
