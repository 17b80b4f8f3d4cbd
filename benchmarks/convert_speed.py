"""Conversion speed against llama.cpp's quantizer, measured side by side in one run.

    python benchmarks/convert_speed.py [--model results/models/qwen3-0.6b-shape] [--types Q4_K_M Q8_0]

llama.cpp quantizes our F32 GGUF (F32 -> type); we convert from the Hugging Face directory (which
also reads the safetensors and writes the tokenizer), with the same number of threads. The script
also checks that both files have the same tensor types and bytes.
"""

import argparse
import os
import tempfile
import time
from pathlib import Path

from qwen3repro import llamacpp
from qwen3repro.config import load_config
from qwen3repro.convert.converter import convert
from qwen3repro.model.sources import materialize


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="results/models/qwen3-0.6b-shape")
    parser.add_argument("--types", nargs="+", default=["Q4_K_M", "Q8_0"])
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--repeat", type=int, default=1, help="measure each type this many times")
    args = parser.parse_args()
    model = Path(args.model)
    if not model.exists():
        spec = load_config("config/qwen3-0.6b-shape.yaml")["models"]["qwen3-0.6b-shape"]
        model.parent.mkdir(parents=True, exist_ok=True)
        materialize(model.name, spec, model)
    with tempfile.TemporaryDirectory(dir=model.parent) as tmp:
        f32 = Path(tmp) / "f32.gguf"
        t = time.perf_counter()
        convert(model, "F32", f32, threads=args.threads)
        print(f"ours  HF -> F32: {time.perf_counter() - t:.1f} s")
        print(f"{'type':8} {'llama.cpp F32->type':>20} {'ours HF->type':>14} {'ratio':>6}  same tensors")
        for type_name in [t for t in args.types for _ in range(args.repeat)]:
            theirs, ours = Path(tmp) / f"llama-{type_name}.gguf", Path(tmp) / f"ours-{type_name}.gguf"
            t_llama = llamacpp.quantize(f32, theirs, type_name, threads=args.threads)
            t = time.perf_counter()
            convert(model, type_name, ours, threads=args.threads, force=True)
            t_ours = time.perf_counter() - t
            diff = llamacpp.compare_tensors(ours, theirs)
            same = not any(diff.values())
            print(
                f"{type_name:8} {t_llama:19.1f}s {t_ours:13.1f}s {t_ours / t_llama:5.2f}x  {same}"
                + ("" if same else f" {diff}")
            )


if __name__ == "__main__":
    main()
