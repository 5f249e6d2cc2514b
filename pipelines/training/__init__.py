"""Training entry points: read datasets from disk, call the loops in ``models.training``."""
