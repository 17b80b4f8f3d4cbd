"""Rule convert: one GGUF file of one file type from the model's Hugging Face directory."""

from qwen3repro.convert.converter import convert
from qwen3repro.rulelog import rule_log

with rule_log(snakemake.log[0]):
    convert(
        snakemake.input.model_dir,
        snakemake.wildcards.type,
        snakemake.output.gguf,
        force=True,
        name=snakemake.wildcards.model,
        threads=snakemake.threads,
    )
