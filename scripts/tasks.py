"""Rule tasks: one file type's task accuracy, flips and loss along the F32 file's generations."""

from qwen3repro.accuracy.task_run import write_tasks_result
from qwen3repro.pipeline.rulelog import rule_log
from qwen3repro.pipeline.threads import limit_threads

with rule_log(snakemake):
    limit_threads(snakemake.threads)
    write_tasks_result(
        snakemake.input.gguf,
        snakemake.input.base,
        snakemake.params.sets,
        snakemake.params.settings,
        snakemake.output[0],
        model=snakemake.wildcards.model,
        file_type=snakemake.wildcards.type,
        generations=snakemake.input.generations or None,
        threads=snakemake.threads,
    )
