"""Rule traces: the showcase generations on one file type, every step recorded for the explorer."""

from qwen3repro.pipeline.rulelog import rule_log
from qwen3repro.pipeline.threads import limit_threads
from qwen3repro.sweep.runner import write_traces

with rule_log(snakemake) as log:
    limit_threads(snakemake.threads)
    traces = write_traces(
        snakemake.input.gguf,
        snakemake.params.settings,
        snakemake.output[0],
        model=snakemake.wildcards.model,
        file_type=snakemake.wildcards.type,
        along=snakemake.input.along or None,
    )
    log.info("%d traces, %d steps", len(traces), sum(len(t["steps"]) for t in traces))
