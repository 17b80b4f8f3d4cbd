"""Rule samples: continuations of the configured prompts from the model (and its untrained twin)."""

from qwen3repro.rulelog import rule_log
from qwen3repro.sweep.samples import write_samples
from qwen3repro.threads import limit_threads

with rule_log(snakemake):
    limit_threads(snakemake.threads)
    write_samples(snakemake.input.model_dir, snakemake.input.gguf, snakemake.output[0], snakemake.params.settings)
