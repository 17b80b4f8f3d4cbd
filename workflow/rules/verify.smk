from qwen3repro.verify.verdict import perplexity_inputs

# The verdict. The run against its model's committed reference (config/reference/<model>.yaml):
# every file's sha256 where the bytes are the same on every machine, and figures within their measured
# spread where they are not (a trained model). A mismatch fails the run with one line unless
# verify.strict is false; a model without a reference is said to have none.


rule verify:
    input:
        model_dir="results/models/{model}",
        gguf=lambda w: expand(
            "results/gguf/{model}/{model}-{type}.gguf", model=w.model, type=file_variants(config, w.model)
        ),
        perplexity=lambda w: (
            perplexity_inputs(Path(workflow.basedir) / config["verify"]["references"] / f"{w.model}.yaml", w.model)
            if runs(config, w.model, "perplexity")
            else []
        ),
    output:
        "results/verify/{model}.json",
    log:
        "results/logs/verify/{model}.log",
    benchmark:
        "results/benchmarks/verify/{model}.tsv"
    conda:
        "../../envs/qwen3repro.yaml"
    threads: 1
    params:
        spec=model_spec,
        reference=lambda w: Path(workflow.basedir) / config["verify"]["references"] / f"{w.model}.yaml",
        strict=config["verify"]["strict"],
        types=lambda w: file_variants(config, w.model),
    script:
        "../../scripts/verify.py"
