# Continuations of the configured prompts, greedy and sampled, by the NumPy engine on the
# F32 file; for a model trained here, also by an untrained model of the same architecture.


rule samples:
    input:
        model_dir="results/models/{model}",
        gguf="results/gguf/{model}/{model}-F32.gguf",
    output:
        "results/samples/{model}.json",
    log:
        "results/logs/samples/{model}.log",
    benchmark:
        "results/benchmarks/samples/{model}.tsv"
    priority: longest_chain("samples")
    conda:
        "../../envs/qwen3repro.yaml"
    threads: THREADS
    resources:
        **needs("samples"),
    params:
        settings=lambda w: settings(w, "samples"),
    script:
        "../../scripts/samples.py"
