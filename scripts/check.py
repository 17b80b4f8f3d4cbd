"""Rule check: one file type against transformers; fails the run when a threshold is broken."""

from qwen3repro.accuracy.check import write_check
from qwen3repro.pipeline.rulelog import rule_log
from qwen3repro.pipeline.threads import limit_threads

with rule_log(snakemake):
    limit_threads(snakemake.threads)
    write_check(
        snakemake.input.model_dir,
        snakemake.input.gguf,
        snakemake.input.corpus,
        snakemake.output[0],
        snakemake.params.settings,
        model=snakemake.wildcards.model,
        file_type=snakemake.wildcards.type,
        imatrix=snakemake.input.imatrix or None,
    )
