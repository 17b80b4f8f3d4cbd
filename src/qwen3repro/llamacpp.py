"""llama.cpp through llama-cpp-python (the `peers` extra): quantize, load and compare, as the pipeline's peer."""

from __future__ import annotations

import ctypes
import time
from pathlib import Path

from qwen3repro.convert.tensor_plan import file_type
from qwen3repro.errors import UserError
from qwen3repro.gguf_file import GGUFFile


def llama_cpp():
    try:
        import llama_cpp
    except ImportError as e:
        raise UserError("llama.cpp is not installed: pip install -e '.[peers]'") from e
    return llama_cpp


def quantize(src: Path | str, dst: Path | str, type_name: str, pure: bool = False, threads: int = 2) -> float:
    """llama-quantize `src` (a GGUF) to `dst` at file type `type_name`, no imatrix; returns seconds."""
    lib = llama_cpp()
    params = lib.llama_model_quantize_default_params()
    params.ftype = int(file_type(type_name)[0])
    params.pure = pure
    params.nthread = threads
    started = time.perf_counter()
    if lib.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params)) != 0:
        raise UserError(f"llama.cpp could not quantize {src} to {type_name}")
    return time.perf_counter() - started


def gguf_tensors(path: Path | str) -> dict[str, tuple[str, bytes]]:
    """Tensor name -> (type name, raw bytes) of a GGUF file."""
    with GGUFFile(path) as f:
        return {name: (info.type.name, f.raw(name).tobytes()) for name, info in f.tensors.items()}


def compare_tensors(ours: Path | str, theirs: Path | str) -> dict[str, list[str]]:
    """Which tensors differ in type or (same type) in bytes between two GGUF files."""
    a, b = gguf_tensors(ours), gguf_tensors(theirs)
    shared = sorted(a.keys() & b.keys())
    return {
        "only_ours": sorted(a.keys() - b.keys()),
        "only_theirs": sorted(b.keys() - a.keys()),
        "type": [n for n in shared if a[n][0] != b[n][0]],
        "bytes": [n for n in shared if a[n][0] == b[n][0] and a[n][1] != b[n][1]],
    }


def load(path: Path | str, n_ctx: int = 256, threads: int = 2):
    """A llama_cpp.Llama on the GGUF, with all logits kept."""
    return llama(model_path=str(path), n_ctx=n_ctx, n_threads=threads, logits_all=True, verbose=False)


def cpu_has_amx() -> bool:
    try:
        return " amx_int8" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


def llama(**kwargs):
    """llama_cpp.Llama(**kwargs). On a CPU with AMX, ggml's AMX weight buffers are turned off
    (use_extra_bufts): their matrix product segfaults on such machines (ggml-org/llama.cpp#20824),
    and llama.cpp then runs its AVX-512 kernels on the same file. A batch (a prompt, a perplexity
    chunk, a task's endings) runs on as many threads as the job was given: llama-cpp-python's own
    default is every core, which two jobs side by side oversubscribe while ggml's threads spin."""
    if "n_threads" in kwargs:
        kwargs.setdefault("n_threads_batch", kwargs["n_threads"])
    lib = llama_cpp()
    if not cpu_has_amx():
        return lib.Llama(**kwargs)
    defaults = lib.llama_cpp.llama_model_default_params

    def without_extra_buffers():
        params = defaults()
        params.use_extra_bufts = False
        return params

    lib.llama_cpp.llama_model_default_params = without_extra_buffers  # read once, in Llama.__init__
    try:
        return lib.Llama(**kwargs)
    finally:
        lib.llama_cpp.llama_model_default_params = defaults
