# The model as a Hugging Face directory (config, tokenizer, safetensors, manifest.json),
# downloaded from the Hub at a pinned revision, linked from a local directory, built here with
# random weights, or pretrained here on Shakespeare (with training_curve.csv).


rule get_model:
    output:
        model_dir=directory("results/models/{model}"),
    log:
        "results/logs/get_model/{model}.log",
    benchmark:
        "results/benchmarks/get_model/{model}.tsv"
    priority: longest_chain("get_model")
    conda:
        "../../envs/qwen3repro.yaml"
    threads: model_threads
    resources:
        **needs("get_model"),
    params:
        spec=model_spec,
    script:
        "../../scripts/get_model.py"
