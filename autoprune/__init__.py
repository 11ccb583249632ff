"""autoprune: find where to prune a trained network."""

__version__ = "0.1.0"
