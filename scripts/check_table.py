"""Rule check_table: one model's check results, a row per file type."""

from qwen3repro.accuracy.check import write_check_table
from qwen3repro.pipeline.rulelog import rule_log

with rule_log(snakemake) as log:
    log.info("\n%s", write_check_table(snakemake.input, snakemake.output[0]))
