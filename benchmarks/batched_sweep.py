"""The sampling sweep one generation at a time against batched (sweep.lanes at once), side by side.

    python benchmarks/batched_sweep.py [--gguf results/gguf/qwen3-0.6b-shape/qwen3-0.6b-shape-F32.gguf] [--lanes 16]
                                       [--without-store]

Every run takes the default grids (the config schema's sweep settings) on the same file in one
process, one BLAS thread each as the sweep rule runs. Prints the wall time of each, the ratio, and
whether the rows are the same but for how they ran (timings, prompts copied from the prompt
store): the same tokens, texts, stop reasons and per-step statistics. `--without-store` adds a
batched run that prefills every prompt, to show what the prompt store gives apart from batching.
"""

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from qwen3repro.config import load_config
from qwen3repro.model.sources import materialize
from qwen3repro.sweep.runner import RUN_COLUMNS, run_sweep

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
    parser.add_argument("--without-store", action="store_true", help="also each batched run without the prompt store")
    args = parser.parse_args()
    settings = load_config("config/config.yaml")["sweep"]
    gguf = f32_file(args.gguf)
    runs = [(1, False)] + [(lanes, store) for lanes in args.lanes for store in [True] + [False] * args.without_store]
    frames, seconds = {}, {}
    with threadpool_limits(args.threads):
        for lanes, store in runs:
            name = f"lanes {lanes:3}" + ("" if store or lanes == 1 else ", no prompt store")
            started = time.perf_counter()
            rows, generations = run_sweep(gguf, settings, lanes=lanes, share_prompts=store)
            seconds[name] = time.perf_counter() - started
            frames[name] = pd.DataFrame(rows).drop(columns=RUN_COLUMNS, errors="ignore"), generations
            print(f"{name}: {len(rows)} rows in {seconds[name]:.1f} s", flush=True)
    base = f"lanes {1:3}"
    base_rows, base_generations = frames[base]
    numeric = base_rows.select_dtypes("number").columns
    for name in list(frames)[1:]:
        rows, generations = frames[name]
        same_tokens = [a["tokens"] for a in base_generations] == [b["tokens"] for b in generations]
        same_other = rows.drop(columns=numeric).equals(base_rows.drop(columns=numeric))
        deviation = np.nanmax(np.abs(rows[numeric].to_numpy(float) - base_rows[numeric].to_numpy(float)))
        print(
            f"{name}: {seconds[base] / seconds[name]:.2f}x less wall time than one at a time; "
            f"same tokens: {same_tokens}; same texts and labels: {same_other}; "
            f"largest difference in a statistic: {deviation:.2e}"
        )


if __name__ == "__main__":
    main()
