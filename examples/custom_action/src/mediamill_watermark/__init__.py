"""Example mediamill plug-in: registers the ``add_watermark`` action (see actions.py)."""
