"""Density models: the protocol (``base``), the registry of names (``registry``), and the two
families, ``autoregressive`` and ``flows``."""
