"""Rule perplexity_part: F32 and every file type on one range of the text's chunks, in one runtime."""

from pathlib import Path

from qwen3repro.accuracy.perplexity_parts import score_part, write_part
from qwen3repro.pipeline.rulelog import rule_log
from qwen3repro.pipeline.threads import limit_threads

with rule_log(snakemake):
    limit_threads(snakemake.threads)
    settings = snakemake.params.settings
    write_part(
        snakemake.output[0],
        score_part(
            dict(zip(snakemake.params.types, snakemake.input.ggufs)),
            snakemake.input.base,
            Path(snakemake.input.corpus).read_text("utf-8"),
            settings,
            runtime=snakemake.wildcards.runtime,
            part=int(snakemake.wildcards.part),
            parts=settings["parts"],
            threads=snakemake.threads,
            low_memory=snakemake.params.low_memory,
        ),
    )
