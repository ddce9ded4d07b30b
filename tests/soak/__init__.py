"""Soak tests (``make soak``): long randomised kill loops; deselected by ``make test``."""
