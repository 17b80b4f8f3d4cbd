# The sampling sweep. Per file type: a grid of sampling settings, thinking and multi-turn
# on every prompt and seed, with per-step statistics; and the token traces of the report's sampling
# explorer, which for every type but the first are also recorded along the first type's tokens.


rule sweep:
    input:
        gguf="results/gguf/{model}/{model}-{type}.gguf",
    output:
        table="results/sweep/{model}/{type}.parquet",
        generations="results/sweep/{model}/{type}.jsonl",
    log:
        "results/logs/sweep/{model}-{type}.log",
    benchmark:
        "results/benchmarks/sweep/{model}-{type}.tsv"
    priority: longest_chain("sweep")
    conda:
        "../../envs/qwen3repro.yaml"
    threads: 1
    resources:
        **needs("sweep"),
    params:
        settings=lambda w: settings(w, "sweep"),
    script:
        "../../scripts/sweep.py"


rule traces:
    input:
        gguf="results/gguf/{model}/{model}-{type}.gguf",
        along=traces_reference,
    output:
        "results/sweep/{model}/{type}-traces.json",
    log:
        "results/logs/traces/{model}-{type}.log",
    benchmark:
        "results/benchmarks/traces/{model}-{type}.tsv"
    priority: longest_chain("traces")
    conda:
        "../../envs/qwen3repro.yaml"
    threads: 1
    resources:
        **needs("traces"),
    params:
        settings=lambda w: settings(w, "sweep"),
    script:
        "../../scripts/traces.py"
