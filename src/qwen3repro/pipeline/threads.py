"""One place that sets how many threads the BLAS library under NumPy (and torch, if loaded) may use."""

from __future__ import annotations

import os
import sys

from qwen3repro.errors import UserError


def limit_threads(n: int | None) -> int:
    """Limit BLAS (and torch, if imported) to n threads; None keeps all cores. Returns the count."""
    if n is None:
        return os.cpu_count() or 1
    if n < 1:
        raise UserError(f"threads must be at least 1, not {n}")
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=n)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(n)
    return n
