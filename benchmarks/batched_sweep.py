"""The sampling sweep one generation at a time against batched (sweep.lanes at once), side by side.

    python benchmarks/batched_sweep.py [--gguf results/gguf/qwen3-0.6b-shape/qwen3-0.6b-shape-F32.gguf] [--lanes 16]

Both runs take the default grids (the config schema's sweep settings) on the same file in one
process, one BLAS thread each as the sweep rule runs. Prints the wall time of each, the ratio, and
whether the rows are the same but for the timing columns: the same tokens, texts and stop reasons;
the per-step statistics to the float rounding a block of rows gives against one row.
"""

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from qwen3repro.config import load_config
from qwen3repro.model.sources import materialize
from qwen3repro.sweep.runner import TIMING_COLUMNS, run_sweep

SHAPE = "qwen3-0.6b-shape"


def f32_file(path: Path) -> Path:
    """The 0.6B-shape F32 file, built (model, then conversion) where it is not there yet."""
    if path.exists():
        return path
    from qwen3repro.convert.converter import convert

    model = Path("results/models") / SHAPE
    if not model.exists():
        model.parent.mkdir(parents=True, exist_ok=True)
        materialize(SHAPE, load_config(f"config/{SHAPE}.yaml")["models"][SHAPE], model)
    path.parent.mkdir(parents=True, exist_ok=True)
    convert(model, "F32", path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gguf", type=Path, default=Path(f"results/gguf/{SHAPE}/{SHAPE}-F32.gguf"))
    parser.add_argument("--lanes", type=int, nargs="+", default=[16])
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    settings = load_config("config/config.yaml")["sweep"]
    gguf = f32_file(args.gguf)
    frames, seconds = {}, {}
    with threadpool_limits(args.threads):
        for lanes in [1] + args.lanes:
            started = time.perf_counter()
            rows, generations = run_sweep(gguf, settings, lanes=lanes)
            seconds[lanes] = time.perf_counter() - started
            frames[lanes] = pd.DataFrame(rows).drop(columns=TIMING_COLUMNS, errors="ignore"), generations
            print(f"lanes {lanes:3}: {len(rows)} rows in {seconds[lanes]:.1f} s", flush=True)
    base_rows, base_generations = frames[1]
    numeric = base_rows.select_dtypes("number").columns
    for lanes in args.lanes:
        rows, generations = frames[lanes]
        same_tokens = [a["tokens"] for a in base_generations] == [b["tokens"] for b in generations]
        same_other = rows.drop(columns=numeric).equals(base_rows.drop(columns=numeric))
        deviation = np.nanmax(np.abs(rows[numeric].to_numpy(float) - base_rows[numeric].to_numpy(float)))
        print(
            f"lanes {lanes:3}: {seconds[1] / seconds[lanes]:.2f}x less wall time than one at a time; "
            f"same tokens: {same_tokens}; same texts and labels: {same_other}; "
            f"largest difference in a statistic: {deviation:.2e}"
        )


if __name__ == "__main__":
    main()
