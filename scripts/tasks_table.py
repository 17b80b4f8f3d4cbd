"""Rule tasks_table: one model's task results, and its loss along the generations, as tables."""

from qwen3repro.accuracy.task_run import write_tasks_tables
from qwen3repro.pipeline.rulelog import rule_log

with rule_log(snakemake):
    write_tasks_tables(snakemake.input, snakemake.output.tasks, snakemake.output.generated)
