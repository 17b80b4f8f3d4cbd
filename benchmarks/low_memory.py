"""Low-memory mode against resident weights on one big file, side by side: memory, time, logits.

    python benchmarks/low_memory.py --gguf results/gguf/qwen3-4b-shape/qwen3-4b-shape-Q4_K_M.gguf \
        [--corpus results/corpus/perplexity.txt] [--chunks 4] [--threads 2]

Each mode runs in a child process of its own, so that each one's peak resident memory (the
kernel's high-water mark) is its own: first the perplexity on `--chunks` chunks of 512 tokens in
low-memory mode (the weights streamed from the file a layer at a time), then the same in resident
mode (every weight dequantized to float32 up front). Each also keeps chunk 1's logits. Prints the
file's size, each run's perplexity, peak RSS and time, and the largest difference between the two
modes' logits on chunk 1.
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

N_CTX = 512


def measure(gguf: Path, corpus: Path, chunks: int, threads: int, low_memory: bool, out: Path) -> None:
    """In the child: open the model, chunk 1's logits (to out.npy), then the perplexity on `chunks`
    chunks; times and the process's peak RSS to out.json."""
    import resource

    import numpy as np
    from threadpoolctl import threadpool_limits

    from qwen3repro.accuracy.perplexity import perplexity_and_kld
    from qwen3repro.engine.qwen3 import Qwen3
    from qwen3repro.engine.tokenizer import Tokenizer

    text = corpus.read_text("utf-8")
    started = time.perf_counter()
    with threadpool_limits(threads):
        model = Qwen3(gguf, n_ctx=N_CTX, low_memory=low_memory)
        loaded = time.perf_counter() - started
        tokens = np.array(Tokenizer.from_gguf(model.file).encode(text, parse_special=False))[:N_CTX]
        np.save(f"{out}.npy", model.forward(tokens, logits_from=N_CTX // 2))  # chunk 1's scored half
        result = {"load_s": loaded, "chunk1_s": time.perf_counter() - started - loaded}
        del model
        scored = time.perf_counter()
        result["perplexity"] = perplexity_and_kld(
            gguf, gguf, text, N_CTX, chunks, threads=threads, low_memory=low_memory
        )["perplexity"]
        result["perplexity_s"] = time.perf_counter() - scored
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    Path(f"{out}.json").write_text(json.dumps(result))


def run(gguf: Path, corpus: Path, chunks: int, threads: int, low_memory: bool, out: Path) -> dict:
    """measure() in a process of its own, so that its peak RSS is its own."""
    mode = "low-memory" if low_memory else "resident"
    child = [sys.executable, __file__, "--gguf", str(gguf), "--corpus", str(corpus), "--chunks", str(chunks)]
    subprocess.run([*child, "--threads", str(threads), "--child", mode, str(out)], check=True)
    return json.loads(Path(f"{out}.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gguf", type=Path, required=True)
    parser.add_argument("--corpus", type=Path, default=Path("results/corpus/perplexity.txt"))
    parser.add_argument("--chunks", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-resident", action="store_true", help="where float32 weights do not fit")
    parser.add_argument("--child", nargs=2, metavar=("MODE", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        mode, out = args.child
        measure(args.gguf, args.corpus, args.chunks, args.threads, mode == "low-memory", Path(out))
        return
    import numpy as np

    print(f"{args.gguf}: {args.gguf.stat().st_size / 2**20:.0f} MiB", flush=True)
    modes = {"low-memory": True} if args.skip_resident else {"low-memory": True, "resident": False}
    with tempfile.TemporaryDirectory() as tmp:
        started, runs = time.perf_counter(), {}
        for name, low_memory in modes.items():
            r = runs[name] = run(args.gguf, args.corpus, args.chunks, args.threads, low_memory, Path(tmp) / name)
            p = r["perplexity"]
            print(
                f"{name + ':':11} {args.chunks} chunks of {N_CTX}, PPL {p['ppl']:.4f} ± {p['ppl_error']:.4f}; "
                f"peak RSS {r['peak_rss_mb']:.0f} MiB; {r['perplexity_s']:.1f} s (before that, opening the "
                f"model took {r['load_s']:.1f} s and chunk 1's logits alone {r['chunk1_s']:.1f} s)",
                flush=True,
            )
        if args.skip_resident:
            return
        streamed, resident = runs["low-memory"], runs["resident"]
        a, b = np.load(Path(tmp) / "low-memory.npy"), np.load(Path(tmp) / "resident.npy")
        print(
            f"chunk 1 logits, low-memory against resident: max |difference| {np.abs(a - b).max():.3g} "
            f"over {a.size} values; bitwise equal: {np.array_equal(a, b)}; "
            f"peak RSS ratio resident / low-memory {resident['peak_rss_mb'] / streamed['peak_rss_mb']:.2f}; "
            f"total {time.perf_counter() - started:.0f} s"
        )


if __name__ == "__main__":
    main()
