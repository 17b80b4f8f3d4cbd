"""Rule task_part: F32 and every file type on one range of every set's items and of the generations."""

from qwen3repro.accuracy.perplexity_parts import write_part
from qwen3repro.accuracy.task_parts import run_task_part
from qwen3repro.pipeline.rulelog import rule_log
from qwen3repro.pipeline.threads import limit_threads

with rule_log(snakemake):
    limit_threads(snakemake.threads)
    settings = snakemake.params.settings
    write_part(
        snakemake.output[0],
        run_task_part(
            dict(zip(snakemake.params.types, snakemake.input.ggufs)),
            snakemake.input.base,
            snakemake.params.sets,
            settings,
            runtime=snakemake.wildcards.runtime,
            part=int(snakemake.wildcards.part),
            parts=settings["parts"],
            generations=snakemake.input.generations or None,
            threads=snakemake.threads,
        ),
    )
