"""Rule get_model: put the model's Hugging Face directory in place from its configured source."""

from qwen3repro.model.sources import materialize
from qwen3repro.pipeline.rulelog import rule_log

with rule_log(snakemake):
    materialize(snakemake.wildcards.model, snakemake.params.spec, snakemake.output.model_dir, threads=snakemake.threads)
