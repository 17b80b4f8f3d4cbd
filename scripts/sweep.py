"""Rule sweep: the sampling grid on one file type."""

from qwen3repro.pipeline.rulelog import rule_log
from qwen3repro.pipeline.threads import limit_threads
from qwen3repro.sweep.runner import summary_table, write_sweep

with rule_log(snakemake) as log:
    limit_threads(snakemake.threads)
    frame = write_sweep(
        snakemake.input.gguf,
        snakemake.params.settings,
        snakemake.output.table,
        snakemake.output.generations,
        model=snakemake.wildcards.model,
        file_type=snakemake.wildcards.type,
    )
    log.info("%d rows\n%s", len(frame), summary_table(frame))
