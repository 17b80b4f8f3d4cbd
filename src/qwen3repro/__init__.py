"""qwen3repro: a reproducibility pipeline and NumPy reference engine for Qwen3."""

import os

__version__ = "0.1.0"

# OpenBLAS's idle threads spin for 2^28 cycles (about 0.1 s) after each product before they sleep.
# The engine runs a prefill's attention and element-wise passes on threads of its own between the
# products, and a spinning BLAS thread takes a core from them: 2^22 cycles (about a millisecond)
# still spans the gaps between one decode step's products. Read once, when NumPy loads OpenBLAS,
# so it only takes effect where this package is imported first (its commands and scripts are).
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "22")
