"""Rule verify: the run against its model's committed reference; the verdict, or one line saying what differs."""

from pathlib import Path

from qwen3repro.pipeline.rulelog import rule_log
from qwen3repro.verify.verdict import write_verdict

with rule_log(snakemake) as log:
    model = snakemake.wildcards.model
    result = write_verdict(
        model,
        snakemake.params.spec,
        snakemake.input.model_dir,
        Path(snakemake.input.gguf[0]).parent,
        snakemake.params.reference,
        snakemake.output[0],
        strict=snakemake.params.strict,
        perplexity_dir=f"results/perplexity/{model}",
        types=snakemake.params.types,
    )
    log.info("%s: %s", result["verdict"], result["summary"])
    print(f"verify: {result['verdict']}: {result['summary']}", flush=True)
