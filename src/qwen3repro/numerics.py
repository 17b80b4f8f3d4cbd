"""Pinned float arithmetic: a job run in a child process whose torch, MKL, OpenBLAS and NumPy take
the same kernels, and so give the same bits, on every x86-64 CPU with AVX2 and FMA.

Each of these libraries picks its kernels when it loads, from the CPU it finds: torch's ATen by the
widest ISA (ATEN_CPU_CAPABILITY), MKL by its code branch (MKL_CBWR), OpenBLAS by the core type
(OPENBLAS_CORETYPE), NumPy's SIMD loops by the CPU's features (NPY_DISABLE_CPU_FEATURES). Kernels of
another width sum in another order, so a model trained on a Xeon differed from one trained on an
EPYC, and 500 steps carried the difference into every weight. A job whose bytes the reference holds
(training; the importance matrix its twins are quantized with) runs in a fresh interpreter with the
four pinned to what every x86-64 CPU since 2013 has, and records what was in force. The variables
must be set before the libraries load, hence the child process: the caller may have loaded them.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from qwen3repro.errors import UserError

log = logging.getLogger(__name__)

# MKL's COMPATIBLE branch is the one it documents as giving the same results on Intel and other
# processors; STRICT is documented to add the same results whatever the thread count (its sgemm
# breaks that at 3 threads, so training's own products go to OpenBLAS: model/train.py), and
# MKL_DYNAMIC=FALSE keeps MKL from choosing fewer threads than it is given.
PINNED = {
    "ATEN_CPU_CAPABILITY": "avx2",
    "MKL_CBWR": "COMPATIBLE,STRICT",
    "MKL_DYNAMIC": "FALSE",
    "OPENBLAS_CORETYPE": "Haswell",
}
CHILD = "qwen3repro.numerics"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def unpinnable() -> str | None:
    """Why this machine cannot take the pinned kernels (not x86-64, or no AVX2 or FMA); None if it can."""
    import platform

    machine = platform.machine().lower()
    if machine not in ("x86_64", "amd64"):
        return f"a {machine} CPU, not x86-64"
    have = set(numpy_simd()["baseline"]) | set(numpy_simd()["found"])
    # NumPy 2.4 names the AVX2-and-FMA level X86_V3; older releases name the features themselves
    missing = [] if "X86_V3" in have else [f for f in ("AVX2", "FMA3") if f not in have]
    return f"the CPU has no {' or '.join(missing)}" if missing else None


def numpy_simd() -> dict[str, list[str]]:
    """NumPy's SIMD levels, as its public show_config reports them: built in (`baseline`), and the
    dispatched ones this CPU has (`found`) or lacks (`not found`)."""
    import numpy as np

    return np.show_config(mode="dicts")["SIMD Extensions"]


def pinned_environment(threads: int) -> tuple[dict[str, str], str | None]:
    """The environment of a pinned child with `threads` threads, and why bits cannot be promised here
    (None where they can). On a machine that cannot take the pins none is set: forcing AVX2 kernels
    on a CPU without AVX2 would crash, not reproduce."""
    env = {k: v for k, v in os.environ.items() if k not in (*PINNED, "NPY_DISABLE_CPU_FEATURES")}
    # OpenBLAS splits a product's blocks by thread count, and the bits follow the split: it gets one
    # thread, and a job cuts its products into fixed blocks of its own (train_ops.matmul_in_parts); torch
    # takes `threads` for the element-wise and row-wise work whose bits no thread count changes
    env.update({"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), "OPENBLAS_NUM_THREADS": "1"})
    why_not = unpinnable()
    if why_not:
        return env, why_not

    for name, value in PINNED.items():
        if os.environ.get(name, value) != value:
            log.warning("%s=%s in the environment is replaced by %s for this job", name, os.environ[name], value)
    env.update(PINNED)
    # NumPy's loops built for wider vectors than AVX2 (numpy 2.4 names them X86_V4 and AVX512_*)
    above = [f for f in numpy_simd()["found"] if f.startswith("AVX512") or f == "X86_V4"]
    if above:
        env["NPY_DISABLE_CPU_FEATURES"] = " ".join(above)
    return env, None


def in_force(why_not: str | None = None) -> dict:
    """What decides this process's float arithmetic: library versions, the kernels each picked, the
    thread count, the CPU; `pinned` says whether they are the pinned ones."""
    import numpy as np
    from threadpoolctl import threadpool_info

    blas = [i for i in threadpool_info() if i.get("internal_api") == "openblas"]
    facts = {
        "cpu": cpu_model(),
        "numpy": np.__version__,
        "openblas": blas[0]["version"] if blas else None,
        "openblas_coretype": blas[0].get("architecture") if blas else None,
        "npy_disable_cpu_features": os.environ.get("NPY_DISABLE_CPU_FEATURES", ""),
        "openblas_threads": blas[0]["num_threads"] if blas else None,
    }
    if "torch" in sys.modules:
        import torch

        mkl = [line.strip() for line in torch.__config__.show().splitlines() if "Math Kernel Library" in line]
        facts.update(
            torch=torch.__version__,
            aten_cpu_capability=torch.backends.cpu.get_cpu_capability(),
            mkl=mkl[0].split("Version ", 1)[-1].split("-")[0] if mkl else None,
            mkl_cbwr=os.environ.get("MKL_CBWR"),
            torch_threads=torch.get_num_threads(),
        )
    took = facts.get("aten_cpu_capability", "AVX2") == "AVX2" and facts["openblas_coretype"] in (None, "Haswell")
    if why_not is None and not took:
        aten, openblas = facts.get("aten_cpu_capability"), facts["openblas_coretype"]
        why_not = f"the pins did not take (ATen {aten}, OpenBLAS {openblas})"
    return {"pinned": why_not is None, "why_not": why_not, **facts}


def run_pinned(target: str, threads: int, **kwargs) -> dict:
    """Call `module:function`(**kwargs) in a pinned child with `threads` threads and return its result
    (a JSON-able dict) with the arithmetic in force under the key "numerics". The child's log records
    come back to this process's loggers; a UserError in it is raised here with its line."""
    env, why_not = pinned_environment(threads)
    if why_not:
        log.warning("bits cannot be promised on this machine (%s): the job runs with its own kernels", why_not)
    with tempfile.TemporaryDirectory(prefix="qwen3repro-pinned-") as tmp:
        result_path = Path(tmp) / "result.json"
        call = {"target": target, "kwargs": kwargs, "result": str(result_path), "why_not": why_not}
        proc = subprocess.Popen(
            [sys.executable, "-m", CHILD],
            env=env,
            stdin=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
        )
        proc.stdin.write(json.dumps(call, default=str))
        proc.stdin.close()
        for line in proc.stderr:  # log records as JSON lines, anything else (progress, warnings) as it came
            _relay(line)
        proc.wait()
        outcome = json.loads(result_path.read_text("utf-8")) if result_path.is_file() else {}
    if "error" in outcome:
        raise UserError(outcome["error"])
    if proc.returncode != 0 or "result" not in outcome:
        raise RuntimeError(f"the pinned job {target} failed (exit {proc.returncode}); its error is above")
    return {**outcome["result"], "numerics": outcome["numerics"]}


def _relay(line: str) -> None:
    try:
        record = json.loads(line)
        logging.getLogger(record["name"]).log(record["level"], "%s", record["message"])
    except (ValueError, TypeError, KeyError):
        sys.stderr.write(line)
        sys.stderr.flush()


class _JSONLines(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        line = {"name": record.name, "level": record.levelno, "message": record.getMessage()}
        sys.stderr.write(json.dumps(line) + "\n")
        sys.stderr.flush()


def _child() -> int:
    call = json.loads(sys.stdin.read())
    root = logging.getLogger()
    root.addHandler(_JSONLines())
    root.setLevel(logging.INFO)
    module, function = call["target"].split(":")
    result_path = Path(call["result"])
    try:
        result = getattr(importlib.import_module(module), function)(**call["kwargs"])
    except UserError as e:
        result_path.write_text(json.dumps({"error": str(e)}), "utf-8")
        return 2
    outcome = {"result": result, "numerics": in_force(call["why_not"])}
    result_path.write_text(json.dumps(outcome, default=str), "utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(_child())
