"""qwen3repro: a reproducibility pipeline and NumPy reference engine for Qwen3."""

__version__ = "0.1.0"
