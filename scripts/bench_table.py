"""Rule bench_table: one model's rows in one table (CSV and JSON) with the decode roofline."""

from qwen3repro.bench.tables import write_summary
from qwen3repro.pipeline.rulelog import rule_log

with rule_log(snakemake) as log:
    table = write_summary(snakemake.input.parts, snakemake.output.csv, snakemake.output.json)
    log.info("\n%s", table)
    print(f"{snakemake.output.csv}:\n{table}", flush=True)
