"""mediamill — a self-hosted media workflow engine."""

__version__ = "0.1.0"
__all__ = ["__version__"]
