"""Rule convert: one GGUF file of one file type (a "-imat" type with the importance matrix) from the model."""

from qwen3repro.convert.converter import convert
from qwen3repro.convert.tensor_plan import split_variant
from qwen3repro.pipeline.rulelog import rule_log

with rule_log(snakemake):
    file_type, with_imatrix = split_variant(snakemake.wildcards.type)
    convert(
        snakemake.input.model_dir,
        file_type,
        snakemake.output.gguf,
        force=True,
        name=snakemake.wildcards.model,
        threads=snakemake.threads,
        imatrix=snakemake.input.imatrix if with_imatrix else None,
        # the path as the workflow names it, not where a storage provider put the local copy
        imatrix_label=snakemake.params.imatrix,
    )
