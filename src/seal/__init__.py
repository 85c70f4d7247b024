"""seal: Self-Adapting Language Models (Zweiger et al., 2025) that run on a laptop CPU and scale out."""

__version__ = "0.1.0"
