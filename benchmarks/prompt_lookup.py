"""Prompt-lookup decoding against plain decoding, ours and llama.cpp's, side by side in one run.

    python benchmarks/prompt_lookup.py [--gguf results/gguf/qwen3-0.6b-shape/qwen3-0.6b-shape-F32.gguf] [--lookup 4]

A prompt that quotes code the answer repeats (the editing case prompt lookup is for), greedy, on
one GGUF file with the same threads: our engine plain and with --lookup K, and llama-cpp-python
plain and with its LlamaPromptLookupDecoding drafting K tokens, repetition by repetition. Prints
decode tokens/s (mean ± sd), the speed-up over each engine's own plain decoding, whether the
drafted output equals the plain one, and the share of drafted tokens accepted.
"""

import argparse
import os
import statistics
import time
from pathlib import Path

from qwen3repro.engine.generate import Generator
from qwen3repro.engine.sampler import PRESETS
from qwen3repro.pipeline.threads import limit_threads

CODE = '''def moving_average(values, window):
    """The mean of each run of `window` consecutive values."""
    if window <= 0:
        raise ValueError("window must be positive")
    averages = []
    total = sum(values[:window])
    averages.append(total / window)
    for i in range(window, len(values)):
        total += values[i] - values[i - window]
        averages.append(total / window)
    return averages
'''
MESSAGES = [
    {
        "role": "user",
        "content": "Rename the variable `total` to `running_sum` in this function and give back the whole "
        "function:\n\n```python\n" + CODE + "```",
    }
]


def spread(values: list[float]) -> str:
    return f"{statistics.mean(values):7.2f} ± {statistics.stdev(values) if len(values) > 1 else 0.0:5.2f}"


def accepted_share(drafts: list[tuple[int, list[int]]], produced: list[int]) -> tuple[int, int]:
    """(accepted, drafted): each draft made at context length n counts its tokens that equal the
    output at n, n + 1, ... up to the first that does not."""
    accepted = drafted = 0
    for at, draft in drafts:
        drafted += len(draft)
        for j, token in enumerate(draft):
            if at + j >= len(produced) or produced[at + j] != token:
                break
            accepted += 1
    return accepted, drafted


def ours(generator: Generator, prompt: list[int], n_gen: int, lookup: int):
    generator.cached = []
    result = generator.generate(prompt, PRESETS["greedy"], n_gen, lookup=lookup)
    return result.decode_tokens_per_s, result.tokens, (result.accepted_tokens, result.draft_tokens)


def llama_cpp(path: Path, threads: int, n_ctx: int, lookup: int):
    from llama_cpp import Llama
    from llama_cpp.llama_speculative import LlamaPromptLookupDecoding

    drafts: list[tuple[int, list[int]]] = []

    class Recording(LlamaPromptLookupDecoding):
        def __call__(self, input_ids, /, **kwargs):
            draft = super().__call__(input_ids, **kwargs)
            drafts.append((len(input_ids), [int(t) for t in draft]))
            return draft

    draft_model = Recording(max_ngram_size=3, num_pred_tokens=lookup) if lookup else None
    llm = Llama(str(path), n_ctx=n_ctx, n_threads=threads, verbose=False, draft_model=draft_model)

    def run(prompt: list[int], n_gen: int):
        drafts.clear()
        llm.reset()
        tokens, first = [], None
        for token in llm.generate(prompt, top_k=1, top_p=1.0, min_p=0.0, temp=0.0, reset=True):
            tokens.append(int(token))
            if first is None:
                first = time.perf_counter()
            if len(tokens) == n_gen or token == llm.token_eos():
                break
        seconds = time.perf_counter() - first
        return (len(tokens) - 1) / seconds, tokens, accepted_share(drafts, list(prompt) + tokens)

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gguf", type=Path, default=Path("results/gguf/qwen3-0.6b-shape/qwen3-0.6b-shape-F32.gguf"))
    parser.add_argument("--lookup", type=int, default=4, help="tokens drafted per pass (both engines)")
    parser.add_argument("--n-gen", type=int, default=128)
    parser.add_argument("--repetitions", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    args = parser.parse_args()
    limit_threads(args.threads)
    generator = Generator.from_gguf(args.gguf, n_ctx=2048)
    prompt = generator.chat_prompt(MESSAGES, thinking=False)
    engines = {
        "numpy": lambda: ours(generator, prompt, args.n_gen, 0),
        f"numpy --lookup {args.lookup}": lambda: ours(generator, prompt, args.n_gen, args.lookup),
    }
    try:
        plain, drafting = (llama_cpp(args.gguf, args.threads, 2048, k) for k in (0, args.lookup))
        engines["llama.cpp"] = lambda: plain(prompt, args.n_gen)
        engines[f"llama.cpp LlamaPromptLookupDecoding({args.lookup})"] = lambda: drafting(prompt, args.n_gen)
    except ImportError:
        print("llama-cpp-python is not installed: its rows are left out (pip install -e '.[peers]')")
    print(f"{args.gguf.name}, prompt {len(prompt)} tokens, {args.n_gen} greedy tokens, {args.threads} threads")
    speeds = {name: [] for name in engines}
    outputs, acceptance = {}, {}
    for name, run in engines.items():
        run()  # warm-up: pages mapped, caches touched
    for _ in range(args.repetitions):
        for name, run in engines.items():
            tokens_per_s, tokens, share = run()
            speeds[name].append(tokens_per_s)
            outputs[name], acceptance[name] = tokens, share
    for name in engines:
        base = "numpy" if name.startswith("numpy") else "llama.cpp"
        ratio = statistics.mean(speeds[name]) / statistics.mean(speeds[base])
        same = outputs[name] == outputs[base]
        accepted, drafted = acceptance[name]
        rate = f"accepted {accepted}/{drafted} drafted ({accepted / drafted:.0%})" if drafted else ""
        print(f"{name:42} {spread(speeds[name])} t/s  {ratio:4.2f}x its plain decode  same tokens: {same}  {rate}")
    print(f"numpy and llama.cpp plain greedy give the same tokens: {outputs.get('llama.cpp') == outputs['numpy']}")


if __name__ == "__main__":
    main()
