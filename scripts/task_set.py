"""Rule task_set: one task set's file in llama-perplexity's format for it."""

from qwen3repro.accuracy.task_sets import write_set
from qwen3repro.pipeline.rulelog import rule_log

with rule_log(snakemake) as log:
    manifest = write_set(
        snakemake.wildcards.set, snakemake.params.spec, snakemake.output[0], snakemake.params.held_out_every
    )
    log.info("%s: %d tasks, %s format", snakemake.output[0], manifest["tasks"], manifest["format"])
