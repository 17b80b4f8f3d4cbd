"""Rules corpus and calibration: the text perplexity is measured on, or an importance matrix collected over."""

from qwen3repro.accuracy.eval_text import write_corpus
from qwen3repro.pipeline.rulelog import rule_log

with rule_log(snakemake) as log:
    part = snakemake.params.get("part", "held_out")
    manifest = write_corpus(snakemake.params.spec, snakemake.output.text, force=True, part=part)
    log.info("%s: %d characters, sha256 %s", snakemake.output.text, manifest["characters"], manifest["sha256"])
