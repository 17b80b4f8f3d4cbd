# Accuracy. The gate (the engine on every file type against transformers on the same weights,
# one bound for all, in config), and perplexity with KL-divergence against the F32 file as llama-perplexity has them.


rule corpus:
    output:
        text="results/corpus/perplexity.txt",
        manifest="results/corpus/perplexity.json",
    log:
        "results/logs/corpus/perplexity.log",
    benchmark:
        "results/benchmarks/corpus/perplexity.tsv"
    priority: longest_chain("corpus")
    conda:
        "../../envs/qwen3repro.yaml"
    threads: 1
    params:
        spec=config["perplexity"]["corpus"],
    script:
        "../../scripts/corpus.py"


rule check:
    input:
        model_dir="results/models/{model}",
        gguf="results/gguf/{model}/{model}-{type}.gguf",
        corpus="results/corpus/perplexity.txt",
        imatrix=imatrix_input,
    output:
        "results/check/{model}/{type}.json",
    log:
        "results/logs/check/{model}-{type}.log",
    benchmark:
        "results/benchmarks/check/{model}-{type}.tsv"
    priority: longest_chain("check")
    conda:
        "../../envs/qwen3repro.yaml"
    threads: 1
    resources:
        **needs("check"),
    params:
        settings=lambda w: settings(w, "check"),
    script:
        "../../scripts/check.py"


rule check_table:
    input:
        lambda w: expand("results/check/{model}/{type}.json", model=w.model, type=file_variants(config, w.model)),
    output:
        "results/check/{model}.csv",
    log:
        "results/logs/check_table/{model}.log",
    benchmark:
        "results/benchmarks/check_table/{model}.tsv"
    conda:
        "../../envs/qwen3repro.yaml"
    threads: 1
    script:
        "../../scripts/check_table.py"


rule perplexity_part:
    input:
        ggufs=model_ggufs,
        base="results/gguf/{model}/{model}-F32.gguf",
        corpus="results/corpus/perplexity.txt",
    output:
        "results/perplexity/{model}/parts/{runtime}-{part}.npz",
    log:
        "results/logs/perplexity_part/{model}-{runtime}-{part}.log",
    benchmark:
        "results/benchmarks/perplexity_part/{model}-{runtime}-{part}.tsv"
    wildcard_constraints:
        runtime="numpy|llama.cpp",
        part=r"\d+",
    priority: longest_chain("perplexity_part")
    conda:
        "../../envs/qwen3repro.yaml"
    threads: 1
    resources:
        **needs("perplexity_part"),
    params:
        settings=lambda w: settings(w, "perplexity"),
        types=lambda w: file_variants(config, w.model),
        low_memory=perplexity_low_memory,
    script:
        "../../scripts/perplexity_part.py"


rule perplexity:
    input:
        parts=lambda w: stage_parts(w, "perplexity"),
        gguf="results/gguf/{model}/{model}-{type}.gguf",
        base="results/gguf/{model}/{model}-F32.gguf",
    output:
        "results/perplexity/{model}/{type}.json",
    log:
        "results/logs/perplexity/{model}-{type}.log",
    benchmark:
        "results/benchmarks/perplexity/{model}-{type}.tsv"
    conda:
        "../../envs/qwen3repro.yaml"
    threads: 1
    params:
        settings=lambda w: settings(w, "perplexity"),
        low_memory=perplexity_low_memory,
    script:
        "../../scripts/perplexity.py"


rule perplexity_table:
    input:
        lambda w: expand("results/perplexity/{model}/{type}.json", model=w.model, type=file_variants(config, w.model)),
    output:
        "results/perplexity/{model}.csv",
    log:
        "results/logs/perplexity_table/{model}.log",
    benchmark:
        "results/benchmarks/perplexity_table/{model}.tsv"
    conda:
        "../../envs/qwen3repro.yaml"
    threads: 1
    script:
        "../../scripts/perplexity_table.py"
