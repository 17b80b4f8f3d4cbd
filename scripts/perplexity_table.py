"""Rule perplexity_table: one model's perplexity and KL-divergence results, a row per file type."""

from qwen3repro.accuracy.perplexity import write_perplexity_table
from qwen3repro.pipeline.rulelog import rule_log

with rule_log(snakemake) as log:
    log.info("\n%s", write_perplexity_table(snakemake.input, snakemake.output[0]))
