"""Rule perplexity: one file type's PPL and KL-divergence against F32, gathered from the parts."""

from qwen3repro.accuracy.perplexity_parts import gather_perplexity
from qwen3repro.pipeline.parts import by_runtime
from qwen3repro.pipeline.rulelog import rule_log

with rule_log(snakemake):
    gather_perplexity(
        by_runtime(snakemake.input.parts),
        snakemake.output[0],
        snakemake.params.settings,
        model=snakemake.wildcards.model,
        file_type=snakemake.wildcards.type,
        gguf=snakemake.input.gguf,
        base_gguf=snakemake.input.base,
        low_memory=snakemake.params.low_memory,
    )
