"""Rule generations: the F32 file's own chat generations, which every file type is read along."""

from qwen3repro.accuracy.generated import write_generations
from qwen3repro.pipeline.rulelog import rule_log
from qwen3repro.pipeline.threads import limit_threads

with rule_log(snakemake) as log:
    limit_threads(snakemake.threads)
    found = write_generations(
        snakemake.input.gguf, snakemake.params.settings, snakemake.output[0], snakemake.wildcards.model
    )
    log.info("%d generations, %d tokens", len(found), sum(len(g["tokens"]) for g in found))
