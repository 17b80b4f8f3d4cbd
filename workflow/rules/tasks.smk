# Task accuracy and flips. Each task set's file, built once in llama-perplexity's format; the F32
# file's own chat generations; per file type, every set scored and those generations read, in each
# runtime against the F32 file in the same runtime.


rule task_set:
    output:
        "results/tasks/sets/{set}.{ext}",
    log:
        "results/logs/task_set/{set}.{ext}.log",
    benchmark:
        "results/benchmarks/task_set/{set}.{ext}.tsv"
    wildcard_constraints:
        ext="txt|csv|bin",
    conda:
        "../../envs/qwen3repro.yaml"
    threads: 1
    params:
        spec=lambda w: task_set_spec(w.set),
        held_out_every=config["perplexity"]["corpus"]["held_out_every"],
    script:
        "../../scripts/task_set.py"


rule generations:
    input:
        gguf="results/gguf/{model}/{model}-F32.gguf",
    output:
        "results/tasks/{model}/generations.json",
    log:
        "results/logs/generations/{model}.log",
    benchmark:
        "results/benchmarks/generations/{model}.tsv"
    priority: longest_chain("generations")
    conda:
        "../../envs/qwen3repro.yaml"
    threads: 1
    resources:
        **needs("generations"),
    params:
        settings=lambda w: generation_settings(w),
    script:
        "../../scripts/generations.py"


rule task_part:
    input:
        ggufs=model_ggufs,
        base="results/gguf/{model}/{model}-F32.gguf",
        sets=task_set_files,
        generations=generations_input,
    output:
        "results/tasks/{model}/parts/{runtime}-{part}.npz",
    log:
        "results/logs/task_part/{model}-{runtime}-{part}.log",
    benchmark:
        "results/benchmarks/task_part/{model}-{runtime}-{part}.tsv"
    wildcard_constraints:
        runtime="numpy|llama.cpp",
        part=r"\d+",
    priority: longest_chain("task_part")
    conda:
        "../../envs/qwen3repro.yaml"
    threads: 1
    resources:
        **needs("task_part"),
    params:
        settings=lambda w: settings(w, "tasks"),
        types=lambda w: file_variants(config, w.model),
        sets=task_sets,
    script:
        "../../scripts/task_part.py"


rule tasks:
    input:
        parts=lambda w: stage_parts(w, "tasks"),
        gguf="results/gguf/{model}/{model}-{type}.gguf",
        base="results/gguf/{model}/{model}-F32.gguf",
        generations=generations_input,
    output:
        "results/tasks/{model}/{type}.json",
    log:
        "results/logs/tasks/{model}-{type}.log",
    benchmark:
        "results/benchmarks/tasks/{model}-{type}.tsv"
    conda:
        "../../envs/qwen3repro.yaml"
    threads: 1
    params:
        sets=task_sets,
    script:
        "../../scripts/tasks.py"


rule tasks_table:
    input:
        lambda w: expand("results/tasks/{model}/{type}.json", model=w.model, type=file_variants(config, w.model)),
    output:
        tasks="results/tasks/{model}.csv",
        generated="results/tasks/{model}-generated.csv",
    log:
        "results/logs/tasks_table/{model}.log",
    benchmark:
        "results/benchmarks/tasks_table/{model}.tsv"
    conda:
        "../../envs/qwen3repro.yaml"
    threads: 1
    script:
        "../../scripts/tasks_table.py"
