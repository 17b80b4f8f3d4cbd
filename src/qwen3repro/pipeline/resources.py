"""What each pipeline job asks the scheduler for: memory and a time limit, from the model's and the
files' sizes and the job's work.

Every memory estimate is a generous bound on the job's peak resident memory in MiB, every time
limit one on its wall time in minutes. A GGUF file that does not exist yet (a dry run plans before
the converter has written it) counts as a placeholder; the rules are evaluated again once their
inputs exist.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from qwen3repro.model import architecture

PLACEHOLDER_MB = 1024
# Python with NumPy, torch and transformers imported, the tokenizer loaded: what every job holds
# before it touches a weight, with room to spare (docs/performance.md has the measured figure).
BASE_MB = 1024
MiB = 2**20
# the bandwidth probe's 1 GiB matrix, which a bench job allocates beside its engines (roofline.py)
PROBE_MB = 1024


def safetensors_bytes(model_dir: Path | str) -> int:
    return sum(p.stat().st_size for p in Path(model_dir).glob("*.safetensors"))


def n_weights_of_model(model_dir: Path | str) -> int:
    """The model's parameters; none for a model not in place yet (a dry run's placeholder)."""
    from qwen3repro.convert.hf_weights import architecture_of, read_config

    if not Path(model_dir).exists():
        return 0
    return architecture.n_parameters(architecture_of(read_config(Path(model_dir))))


def gguf_shapes(gguf: Path | str) -> dict[str, tuple[int, ...]]:
    """Every tensor's shape in the file; none for a file not written yet (a dry run's placeholder)."""
    path = Path(gguf)
    if not path.exists():
        return {}
    stat = path.stat()
    return dict(_file_shapes(str(path.resolve()), stat.st_size, stat.st_mtime_ns))


@functools.lru_cache(maxsize=256)
def _file_shapes(path: str, size: int, mtime_ns: int) -> dict[str, tuple[int, ...]]:
    """gguf_shapes, read once per version of a file: a job's memory, time limit and mode each ask,
    and reading the directory means parsing the 151,936-token vocabulary before it (a third of a
    second)."""
    from qwen3repro.gguf_file import GGUFFile

    with GGUFFile(path) as f:
        return {name: tuple(t.shape) for name, t in f.tensors.items()}


def n_elements(shapes: dict[str, tuple[int, ...]]) -> list[int]:
    return [int(np.prod(shape)) for shape in shapes.values()]


def n_weights_of_gguf(gguf: Path | str) -> int:
    return sum(n_elements(gguf_shapes(gguf)))


def n_weights_of_spec(spec: dict) -> int | None:
    """A synthetic or trained model's size from its config entry; None for downloads and local models."""
    if spec.get("source") in ("synthetic", "trained"):
        return architecture.n_parameters(architecture.resolve(spec["preset"], spec.get("architecture")))
    return None


# Below this many weights a file type's conversion takes seconds on one core: its job asks for one
# thread, since a job that needs two free cores at once waits behind every one-core job that keeps
# one busy (Snakemake reserves none), and the conversions head the run's longest chains.
SMALL_MODEL = 100_000_000


def convert_threads(spec: dict, threads: int) -> int:
    n = n_weights_of_spec(spec)
    return 1 if n is not None and n < SMALL_MODEL else threads


# --- memory -------------------------------------------------------------------------------------


def model_mb(spec: dict) -> int:
    """Putting a model in place: building, training or downloading it."""
    n = n_weights_of_spec(spec)
    if spec.get("source") == "synthetic":
        # one tensor drawn at a time in float32, the file written from the saved dtype's copies
        dtype_bytes = 4 if spec["dtype"] == "float32" else 2
        return BASE_MB // 2 + int(1.5 * n * dtype_bytes) // MiB
    if spec.get("source") == "trained":
        # weights, gradients and two AdamW moments in float32, activations, and the logits buffer
        return 2048 + 24 * n // MiB
    return BASE_MB


def convert_mb(model_dir: Path | str) -> int:
    """Tensors are converted one at a time; twice the weights' size bounds the largest in float32."""
    return BASE_MB + 2 * safetensors_bytes(model_dir) // MiB


def gguf_mb(gguf: Path | str) -> int:
    """The engine on a GGUF file holds its weights in float32; llama.cpp maps the file beside it."""
    if not Path(gguf).exists():
        return PLACEHOLDER_MB
    return BASE_MB + (4 * n_weights_of_gguf(gguf) + Path(gguf).stat().st_size) // MiB


def kv_and_logits_bytes(gguf: Path | str) -> tuple[int, int]:
    """Bytes of the engine's float32 KV cache per position (a key and a value per layer and key-value
    head) and of one position's logits (float32, with the sampler's float64 copy)."""
    from qwen3repro.gguf_file import GGUFFile

    with GGUFFile(gguf) as f:
        field = f.fields.get
        n_heads = field("qwen3.attention.head_count")
        head_dim = field("qwen3.attention.key_length") or field("qwen3.embedding_length") // n_heads
        vocab = f.tensors["token_embd.weight"].shape[0]
        return 2 * 4 * field("qwen3.block_count") * field("qwen3.attention.head_count_kv") * head_dim, 12 * vocab


def sweep_mb(gguf: Path | str, settings: dict) -> int:
    """The engine's weights, and per lane (a generation in flight) a KV cache as long as the longest
    generation and a row of logits; batched, the prompt store too: each single-turn prompt, with
    thinking on and off, prefilled once (its keys and values and the logits after it)."""
    from qwen3repro.engine.prompt_store import PROMPT_STORE_BYTES
    from qwen3repro.sweep.grid import positions

    if not Path(gguf).exists():
        return PLACEHOLDER_MB
    kv, logits = kv_and_logits_bytes(gguf)
    lanes, one = settings["lanes"], positions(settings) * kv + logits
    stored = 0 if lanes == 1 else min(PROMPT_STORE_BYTES, 2 * len(settings["prompts"]) * one)
    return gguf_mb(gguf) + (lanes * one + stored) // MiB


def samples_mb(gguf: Path | str, trained: bool) -> int:
    """The engine on the F32 file reads its weights in place (mapped); a trained model's untrained
    twin of the same size is built beside it."""
    return BASE_MB + (2 if trained else 1) * Path(gguf).stat().st_size // MiB


def bench_hf_mb(model_dir: Path | str, engine: str) -> int:
    """transformers maps the saved weights and holds its own copy in the engine's dtype."""
    dtype_bytes = 2 if engine.endswith("bf16") else 4
    n = n_weights_of_model(model_dir)
    return BASE_MB + int(1.1 * (dtype_bytes * n + safetensors_bytes(model_dir))) // MiB


def logits_mb(positions: int, vocab: int, copies: int) -> int:
    """A probability for every token at every position, float32 or float64, `copies` times over."""
    return positions * vocab * 4 * copies // MiB


def check_mb(gguf: Path | str, max_tokens: int) -> int:
    """The engine and transformers each hold the weights in float32 (an F32 file's are read in
    place); the logits over the longest prompt from both, with their float64 comparison; and every
    tensor quantized again from the source, the largest one's working arrays at the peak."""
    shapes = gguf_shapes(gguf)
    if not shapes:
        return PLACEHOLDER_MB
    sizes = n_elements(shapes)
    vocab = max(shapes["token_embd.weight"])
    return BASE_MB + (8 * sum(sizes) + 8 * max(sizes)) // MiB + logits_mb(max_tokens, vocab, copies=4)


def perplexity_mb(
    base: Path | str, n_ctx: int = 512, low_memory: bool = False, llama_cpp: bool = True, held_bytes: int | None = None
) -> int:
    """A part job of the perplexity stage (accuracy/perplexity_parts): one file's weights at a time,
    dequantized to float32 (in low-memory mode a layer at a time instead; llama.cpp, if it runs,
    maps the files, at most the F32 one's size); what the job holds of F32 (`held_bytes`; by
    default a whole group of chunks' distributions); a chunk's logits and the comparison's working
    blocks."""
    from qwen3repro.accuracy.divergence import ROWS

    shapes = gguf_shapes(base)
    if not shapes:
        return PLACEHOLDER_MB
    n, vocab = sum(n_elements(shapes)), max(shapes["token_embd.weight"])
    if held_bytes is None:
        held_bytes = held_chunks_bytes(None, n_ctx, 1, vocab)
    working = logits_mb(n_ctx, vocab, copies=2) + 4 * ROWS * vocab * 8 // MiB
    weights = streamed_mb(shapes, n_ctx) if low_memory else 4 * n // MiB
    if llama_cpp:
        weights = max(weights, Path(base).stat().st_size // MiB + logits_mb(n_ctx, vocab, copies=2))
    return BASE_MB + weights + held_bytes // MiB + working


def held_chunks_bytes(chunks: int | None, n_ctx: int, parts: int, vocab: int) -> int:
    """The F32 distributions a perplexity part holds at once: a group of its chunks' scored positions
    (float32 logits, float64 log-probabilities and probabilities: 20 bytes a logit)."""
    from qwen3repro.accuracy.perplexity_parts import GROUP, largest_part

    at_once = GROUP if chunks is None else min(GROUP, largest_part(chunks, parts))
    return at_once * (n_ctx // 2) * vocab * 20


def vocab_of(gguf: Path | str) -> int:
    shapes = gguf_shapes(gguf)
    return max(shapes["token_embd.weight"]) if shapes else 0


def layer_bytes(shapes: dict[str, tuple[int, ...]]) -> int:
    """One decoder layer's weights in float32, the largest layer's."""
    per_layer: dict[str, int] = {}
    for name, shape in shapes.items():
        if name.startswith("blk."):
            block = name.split(".")[1]
            per_layer[block] = per_layer.get(block, 0) + 4 * int(np.prod(shape))
    return max(per_layer.values(), default=0)


def streamed_mb(shapes: dict[str, tuple[int, ...]], n_ctx: int) -> int:
    """The engine in low-memory mode on n_ctx tokens: a layer in float32 and its dequantization's
    working arrays, the activations (the widest, the gate and up products, twice over) and one
    head's worth of attention scores per query head."""
    width = shapes.get("blk.0.ffn_gate.weight", (0,))[0]
    heads = shapes.get("blk.0.attn_q.weight", (0,))[0] // shapes.get("blk.0.attn_q_norm.weight", (1,))[0]
    return (2 * layer_bytes(shapes) + 4 * n_ctx * (4 * width + heads * n_ctx)) // MiB


def perplexity_low_memory(base: Path | str, settings: dict, budget_mb: int | None) -> bool:
    """Whether a perplexity job runs the engine in low-memory mode: when the F32 weights held in
    float32 would not fit the budget (cluster.mem_mb; this machine's memory if None)."""
    return perplexity_mb(base, settings["n_ctx"], llama_cpp=False) > (budget_mb or machine_mb())


def machine_mb() -> int:
    import os

    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // MiB


def tasks_mb(base: Path | str, llama_cpp: bool, n_ctx: int, held_rows: int, generated_rows: int) -> int:
    """A part job of the tasks stage (accuracy/task_parts): one file's weights at a time (llama.cpp:
    the file mapped and a context's logits), the F32 rows of logits of a group of items (float32)
    and the F32 distributions along its generations (20 bytes a logit), and one file's rows beside them."""
    shapes = gguf_shapes(base)
    if not shapes:
        return PLACEHOLDER_MB
    n, vocab = sum(n_elements(shapes)), max(shapes["token_embd.weight"])
    weights = Path(base).stat().st_size // MiB + logits_mb(n_ctx, vocab, copies=1) if llama_cpp else 4 * n // MiB
    held = held_rows * vocab * 4 + generated_rows * vocab * 20
    return BASE_MB + weights + 2 * held // MiB
