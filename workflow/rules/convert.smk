# Stage 2: GGUF files at every configured file type, each with a JSON manifest (sha256, size,
# bits per weight, per-tensor type and error), written tensor by tensor.


rule convert:
    input:
        model_dir="results/models/{model}",
    output:
        gguf="results/gguf/{model}/{model}-{type}.gguf",
        manifest="results/gguf/{model}/{model}-{type}.json",
    log:
        "results/logs/convert/{model}-{type}.log",
    benchmark:
        "results/benchmarks/convert/{model}-{type}.tsv"
    conda:
        "../../envs/qwen3repro.yaml"
    threads: 2
    resources:
        mem_mb=convert_mem_mb,
    script:
        "../../scripts/convert.py"
