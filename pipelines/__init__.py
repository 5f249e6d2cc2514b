"""ugains pipelines: Beam sources, inference, sinks and the command line."""

__version__ = "0.1.0"
