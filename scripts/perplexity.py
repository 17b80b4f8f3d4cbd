"""Rule perplexity: llama-perplexity's PPL of one file type and its KL-divergence against F32."""

from qwen3repro.accuracy.perplexity import write_perplexity
from qwen3repro.pipeline.rulelog import rule_log
from qwen3repro.pipeline.threads import limit_threads

with rule_log(snakemake):
    limit_threads(snakemake.threads)
    write_perplexity(
        snakemake.input.gguf,
        snakemake.input.base,
        snakemake.input.corpus,
        snakemake.output[0],
        snakemake.params.settings,
        model=snakemake.wildcards.model,
        file_type=snakemake.wildcards.type,
        threads=snakemake.threads,
        low_memory=snakemake.params.low_memory,
    )
