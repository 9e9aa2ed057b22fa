"""OrderHub: one canonical, deduplicated order store for every sales channel."""

__version__ = "0.1.0"
