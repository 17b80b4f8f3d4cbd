"""Rule report: the comparison page, its Markdown summary and its figures."""

from qwen3repro.pipeline.rulelog import rule_log
from qwen3repro.report.page import write_report

with rule_log(snakemake) as log:
    names = write_report(
        snakemake.params.config, snakemake.output.html, snakemake.output.markdown, snakemake.output.figures
    )
    log.info("%s: %d figures", snakemake.output.html, len(names))
