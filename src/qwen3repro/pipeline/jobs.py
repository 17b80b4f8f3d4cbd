"""What each rule's jobs ask the scheduler for: one entry per rule, its memory and its time limit.

A rule whose jobs need more than the profiles' `default-resources` (1024 MB, 10 minutes) has an
entry in RULES; adding a rule means adding its line here, nothing in the rule files but
`resources: **needs("<rule>")`. The estimates themselves live in qwen3repro.pipeline.resources
(memory) and qwen3repro.pipeline.time_limits.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from qwen3repro.config import model_settings
from qwen3repro.pipeline import resources, time_limits


@dataclass(frozen=True)
class Job:
    """One job as Snakemake describes it when it asks for resources."""

    config: dict
    wildcards: Any
    input: Any
    threads: int

    @property
    def spec(self) -> dict:
        return self.config["models"][self.wildcards.model]

    @property
    def trained(self) -> bool:
        return self.spec["source"] == "trained"

    def settings(self, stage: str) -> dict:
        return model_settings(self.config, self.wildcards.model)[stage]


def perplexity_low_memory(job: Job) -> bool:
    """Low-memory mode where the weights in float32 would not fit a job (cluster.mem_mb)."""
    return resources.perplexity_low_memory(job.input.base, job.settings("perplexity"), job.config["cluster"]["mem_mb"])


def _perplexity_mb(job: Job) -> int:
    from qwen3repro.accuracy.perplexity import chunk_count

    perplexity = job.settings("perplexity")
    n_ctx = perplexity["n_ctx"]
    tokens = time_limits.corpus_tokens(job.input.corpus)
    chunks = chunk_count(tokens, n_ctx, perplexity["chunks"]) if tokens else perplexity["chunks"]
    held = resources.held_chunks_bytes(chunks, n_ctx, perplexity["parts"], resources.vocab_of(job.input.base))
    llama_cpp = job.wildcards.runtime == "llama.cpp"
    return resources.perplexity_mb(job.input.base, n_ctx, perplexity_low_memory(job), llama_cpp, held)


def _tasks_mb(job: Job) -> int:
    """The F32 rows a part job holds at once: a group of its items' (task_parts.held_rows) and its
    share of the generations' positions."""
    from qwen3repro.accuracy.generated import count
    from qwen3repro.accuracy.perplexity_parts import largest_part
    from qwen3repro.accuracy.task_parts import held_rows

    tasks = job.settings("tasks")
    rows = held_rows([p for p in job.input.sets if Path(p).exists()], tasks["parts"])
    sweep = job.settings("sweep") or job.config["sweep"]
    generated = largest_part(count(sweep), tasks["parts"]) * sweep["max_new_tokens"] if tasks["generated"] else 0
    n_ctx = max(tasks["n_ctx"], sweep["max_new_tokens"])
    return resources.tasks_mb(job.input.base, job.wildcards.runtime == "llama.cpp", n_ctx, rows, generated)


def _perplexity_minutes(job: Job) -> int:
    return time_limits.perplexity_minutes(
        job.input.ggufs, job.input.corpus, job.settings("perplexity"), job.threads, perplexity_low_memory(job)
    )


Estimate = Callable[[Job], int]

# rule: (memory in MiB, time limit in minutes)
RULES: dict[str, tuple[Estimate, Estimate]] = {
    "get_model": (
        lambda j: resources.model_mb(j.spec),
        lambda j: time_limits.model_minutes(j.spec, j.threads),
    ),
    "convert": (
        lambda j: resources.convert_mb(j.input.model_dir),
        lambda j: time_limits.convert_minutes(j.input.model_dir, j.wildcards.type, j.threads),
    ),
    "imatrix": (
        lambda j: resources.gguf_mb(j.input.gguf),
        lambda j: time_limits.imatrix_minutes(j.input.gguf, j.settings("convert")["imatrix"], j.threads),
    ),
    "check": (
        lambda j: resources.check_mb(j.input.gguf, j.settings("check")["max_tokens"]),
        lambda j: time_limits.check_minutes(j.input.gguf, j.wildcards.type, j.settings("check"), j.threads),
    ),
    "perplexity_part": (_perplexity_mb, _perplexity_minutes),
    "bench_gguf": (
        lambda j: resources.gguf_mb(j.input.gguf) + resources.PROBE_MB,
        lambda j: time_limits.bench_gguf_minutes(j.input.gguf, j.settings("bench"), j.threads, j.wildcards.type),
    ),
    "bench_hf": (
        lambda j: resources.bench_hf_mb(j.input.model_dir, j.wildcards.engine) + resources.PROBE_MB,
        lambda j: time_limits.bench_hf_minutes(j.input.model_dir, j.settings("bench"), j.threads),
    ),
    "sweep": (
        lambda j: resources.sweep_mb(j.input.gguf, j.settings("sweep")),
        lambda j: time_limits.sweep_minutes(j.input.gguf, j.settings("sweep")),
    ),
    "traces": (
        lambda j: resources.gguf_mb(j.input.gguf),
        lambda j: time_limits.traces_minutes(j.input.gguf, j.settings("sweep")),
    ),
    "samples": (
        lambda j: resources.samples_mb(j.input.gguf, j.trained),
        lambda j: time_limits.samples_minutes(j.input.gguf, j.settings("samples"), j.trained),
    ),
    "generations": (
        lambda j: resources.gguf_mb(j.input.gguf),
        lambda j: time_limits.generations_minutes(j.input.gguf, j.settings("sweep") or j.config["sweep"]),
    ),
    "task_part": (
        _tasks_mb,
        lambda j: time_limits.tasks_minutes(j.input.ggufs, j.input.sets, j.settings("tasks"), j.threads),
    ),
    "report": (lambda j: 2048, lambda j: 15),
}


def needs(config: dict, rule: str) -> dict[str, Callable]:
    """A rule's `resources:` as Snakemake takes them: callables of the job's wildcards, inputs and threads."""
    mem_mb, minutes = RULES[rule]
    return {
        "mem_mb": lambda wildcards, input, threads: mem_mb(Job(config, wildcards, input, threads)),
        "runtime": lambda wildcards, input, threads: minutes(Job(config, wildcards, input, threads)),
    }
