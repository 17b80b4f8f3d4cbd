"""Rule imatrix: the importance matrix of one model over the calibration text, in llama-imatrix's format."""

from qwen3repro.convert.calibrate import write_imatrix
from qwen3repro.pipeline.rulelog import rule_log

with rule_log(snakemake):
    write_imatrix(
        snakemake.input.gguf,
        snakemake.input.text,
        snakemake.output[0],
        n_ctx=snakemake.params.n_ctx,
        chunks=snakemake.params.chunks,
        force=True,
        threads=snakemake.threads,
    )
