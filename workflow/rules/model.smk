# Stage 1: the model as a Hugging Face directory (config, tokenizer, safetensors, manifest.json),
# downloaded from the Hub at a pinned revision, linked from a local directory, or built here.


rule get_model:
    output:
        model_dir=directory("results/models/{model}"),
    params:
        spec=model_spec,
    log:
        "results/logs/get_model/{model}.log",
    benchmark:
        "results/benchmarks/get_model/{model}.tsv"
    threads: 1
    resources:
        mem_mb=model_mem_mb,
    conda:
        "../../envs/qwen3repro.yaml"
    script:
        "../../scripts/get_model.py"
