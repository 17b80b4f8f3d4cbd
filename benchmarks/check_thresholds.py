"""Derive the accuracy gate's thresholds from measured check tables, with a stated margin.

    python benchmarks/check_thresholds.py results/check/qwen3-shakespeare.csv [more.csv ...]

Prints a `check: thresholds:` block for a config: per file type other than F32, twice the worst
value measured over the given tables for max |Δlogit|, mean KL and max KL, and for top-1
agreement twice the worst disagreement plus one percentage point (left out when that is no bound); F32 keeps
the fixed bound (max |Δlogit| 1e-4, top-1 100%, greedy 64 of 64).
Several tables (e.g. the trained model and its 4-step CI twin) give bounds that hold for all.
"""

import math
import sys

import pandas as pd

UPPER = ["max_abs_dlogit", "kl_mean", "kl_max"]
MARGIN = 2.0


def round_up(x: float, digits: int = 2) -> float:
    if x <= 0:
        return 0.0
    scale = 10 ** (math.floor(math.log10(x)) - digits + 1)
    return math.ceil(x / scale) * scale


def main(paths: list[str]) -> None:
    frame = pd.concat([pd.read_csv(p) for p in paths])
    print("check:\n  thresholds:")
    print("    F32: {max_abs_dlogit: 1.0e-4, top1_agreement: 1.0, greedy_match: 64}")
    for file_type, rows in frame.groupby("type", sort=False):
        if file_type == "F32":
            continue
        bounds = {m: f"{round_up(MARGIN * rows[m].max()):.2g}" for m in UPPER}
        floor = math.floor((1 - MARGIN * (1 - rows["top1_agreement"].min()) - 0.01) * 100) / 100
        if floor > 0:
            bounds["top1_agreement"] = f"{floor:.2f}"
        print(f"    {file_type}: {{{', '.join(f'{k}: {v}' for k, v in bounds.items())}}}")


if __name__ == "__main__":
    main(sys.argv[1:])
