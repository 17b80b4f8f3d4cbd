"""Rule tasks: one file type's task accuracy, flips and loss along the F32 file's generations,
gathered from the parts."""

from qwen3repro.accuracy.task_parts import gather_tasks
from qwen3repro.pipeline.parts import by_runtime
from qwen3repro.pipeline.rulelog import rule_log

with rule_log(snakemake):
    gather_tasks(
        by_runtime(snakemake.input.parts),
        snakemake.params.sets,
        snakemake.output[0],
        model=snakemake.wildcards.model,
        file_type=snakemake.wildcards.type,
        gguf=snakemake.input.gguf,
        base_gguf=snakemake.input.base,
        generations=snakemake.input.generations or None,
    )
