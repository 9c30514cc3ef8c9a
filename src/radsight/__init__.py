"""Radsight: an open AI radiology platform."""

__version__ = "0.1.0"
