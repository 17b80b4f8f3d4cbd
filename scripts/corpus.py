"""Rule corpus: the text perplexity and KL-divergence are measured on."""

from qwen3repro.accuracy.eval_text import write_corpus
from qwen3repro.rulelog import rule_log

with rule_log(snakemake.log[0]) as log:
    manifest = write_corpus(snakemake.params.spec, snakemake.output.text, force=True)
    log.info("%s: %d characters, sha256 %s", snakemake.output.text, manifest["characters"], manifest["sha256"])
