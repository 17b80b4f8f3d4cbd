"""Rule samples: continuations of the configured prompts from the model (and its untrained twin)."""

from qwen3repro.pipeline.rulelog import rule_log
from qwen3repro.pipeline.threads import limit_threads
from qwen3repro.sweep.samples import write_samples

with rule_log(snakemake):
    limit_threads(snakemake.threads)
    write_samples(snakemake.input.model_dir, snakemake.input.gguf, snakemake.output[0], snakemake.params.settings)
