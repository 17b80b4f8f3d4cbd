"""The perplexity stage's cost per file type beside llama-perplexity's, side by side in one run.

    python benchmarks/perplexity_vs_llama.py --gguf-dir results/gguf/qwen3-0.6b-shape \
        --corpus results/corpus/perplexity.txt --types Q8_0 Q4_K_M Q2_K --chunks 4 --threads 2

llama.cpp's way: `llama-perplexity --kl-divergence-base` once on F32 (its logits saved), then
`--kl-divergence` per file type against that file. Ours: a part job (accuracy/perplexity_parts)
evaluates F32 once and every type against it; a type's cost is what it adds to the job (the job
with F32 and the type, less the job with F32 alone). Both on the same chunks, threads and F32 KV
cache. Printed per type: llama.cpp runtime seconds, ours / the binary's; NumPy runtime seconds and
its scored tokens per second beside the engine's own prefill rate (a 512-token prompt, pp512).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def timed(function, *args, **kwargs) -> float:
    started = time.perf_counter()
    function(*args, **kwargs)
    return time.perf_counter() - started


def llama_perplexity(binary: Path, gguf: Path, corpus: Path, args, *extra: str) -> float:
    """Seconds of one llama-perplexity run (the process, loading included, as a user times it)."""
    command = [str(binary), "-m", str(gguf), "-f", str(corpus), "-c", str(args.n_ctx), "--chunks", str(args.chunks)]
    command += ["-t", str(args.threads), "-ctk", "f32", "-ctv", "f32", "-fa", "off", "-nr", *extra]
    started = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"llama-perplexity failed: {proc.stderr[-2000:]}")
    return time.perf_counter() - started


def ours(ggufs: dict, base: Path, text: str, args, runtime: str) -> float:
    from qwen3repro.accuracy.perplexity_parts import score_part

    settings = {"n_ctx": args.n_ctx, "chunks": args.chunks}
    return timed(score_part, ggufs, base, text, settings, runtime, 0, 1, args.threads)


def prefill_rate(gguf: Path, n_tokens: int = 512) -> float:
    """The engine's pp512: tokens per second of one prompt's forward pass, the last position's logits."""
    import numpy as np

    from qwen3repro.engine.qwen3 import Qwen3

    model = Qwen3(gguf, n_ctx=n_tokens)
    tokens = np.arange(1000, 1000 + n_tokens)
    model.forward(tokens, start=0, logits_from=n_tokens - 1)  # warm-up
    return n_tokens / min(timed(model.forward, tokens, start=0, logits_from=n_tokens - 1) for _ in range(2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gguf-dir", type=Path, required=True, help="a model's converted files (<name>-<TYPE>.gguf)")
    parser.add_argument("--corpus", type=Path, required=True)
    parser.add_argument("--types", nargs="+", default=["Q8_0", "Q4_K_M", "Q2_K"])
    parser.add_argument("--n-ctx", type=int, default=512)
    parser.add_argument("--chunks", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--llama-tools", type=Path, default=REPO / ".venv" / "llama.cpp" / "build" / "bin")
    args = parser.parse_args()

    from qwen3repro.pipeline.threads import limit_threads

    limit_threads(args.threads)
    files = {p.stem.rsplit("-", 1)[-1]: p for p in args.gguf_dir.glob("*.gguf")}
    base = files.get("F32")
    if base is None or any(t not in files for t in args.types):
        sys.exit(f"{args.gguf_dir}: needs the F32 file and {', '.join(args.types)}")
    binary = args.llama_tools / "llama-perplexity"
    if not binary.is_file():
        sys.exit(f"{binary} is not built: make llama-tools")
    text = args.corpus.read_text("utf-8")
    print(f"{args.gguf_dir.name}: {args.chunks} chunks of {args.n_ctx}, {args.threads} threads")
    with tempfile.TemporaryDirectory() as tmp:
        saved = Path(tmp) / "base.kld"
        base_llama = llama_perplexity(binary, base, args.corpus, args, "--kl-divergence-base", str(saved))
        base_ours = {rt: ours({"F32": base}, base, text, args, rt) for rt in ("llama.cpp", "numpy")}
        print(f"F32 base, once: llama-perplexity {base_llama:.1f} s; ours: llama.cpp {base_ours['llama.cpp']:.1f} s,"
              f" NumPy {base_ours['numpy']:.1f} s")  # fmt: skip
        header = ("type", "llama-ppl s", "ours s", "ratio", "NumPy s", "tok/s", "pp512", "share")
        print("{:8} {:>11} {:>7} {:>6}   {:>7} {:>7} {:>7} {:>6}".format(*header))
        for t in args.types:
            theirs = llama_perplexity(
                binary, files[t], args.corpus, args, "--kl-divergence-base", str(saved), "--kl-divergence"
            )
            both = {"F32": base, t: files[t]}
            mine = ours(both, base, text, args, "llama.cpp") - base_ours["llama.cpp"]
            numpy_s = ours(both, base, text, args, "numpy") - base_ours["numpy"]
            scored = args.chunks * (args.n_ctx - args.n_ctx // 2 - 1)
            rate, pp = args.chunks * args.n_ctx / numpy_s, prefill_rate(files[t], args.n_ctx)
            print(f"{t:8} {theirs:11.1f} {mine:7.1f} {mine / theirs:6.2f}   {numpy_s:7.1f} {rate:7.0f} {pp:7.0f}"
                  f" {rate / pp:6.2f}  ({scored} positions scored)")  # fmt: skip


if __name__ == "__main__":
    main()
