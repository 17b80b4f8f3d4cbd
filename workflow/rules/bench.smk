# Speed and memory, as llama-bench measures them, per file type (numpy and llama.cpp on
# the GGUF) and per transformers dtype, then one table per model with the decode roofline (against
# the memory bandwidth probed beside each job's runs, before and after them).
# Every job runs with bench.threads (llama-bench -t); the Slurm profile asks for a whole node for
# them, so that measurements never share a machine.


rule bench_gguf:
    input:
        gguf="results/gguf/{model}/{model}-{type}.gguf",
    output:
        "results/bench/{model}/{type}.json",
    log:
        "results/logs/bench_gguf/{model}-{type}.log",
    benchmark:
        "results/benchmarks/bench_gguf/{model}-{type}.tsv"
    conda:
        "../../envs/qwen3repro.yaml"
    threads: BENCH_THREADS
    resources:
        **needs("bench_gguf"),
    params:
        settings=lambda w: settings(w, "bench"),
    script:
        "../../scripts/bench_gguf.py"


rule bench_hf:
    input:
        model_dir="results/models/{model}",
    output:
        "results/bench/{model}/{engine}.json",
    log:
        "results/logs/bench_hf/{model}-{engine}.log",
    benchmark:
        "results/benchmarks/bench_hf/{model}-{engine}.tsv"
    wildcard_constraints:
        engine="transformers-f32|transformers-bf16",
    conda:
        "../../envs/qwen3repro.yaml"
    threads: BENCH_THREADS
    resources:
        **needs("bench_hf"),
    params:
        settings=lambda w: settings(w, "bench"),
    script:
        "../../scripts/bench_hf.py"


rule bench_table:
    input:
        parts=bench_parts,
    output:
        csv="results/bench/{model}.csv",
        json="results/bench/{model}.json",
    log:
        "results/logs/bench_table/{model}.log",
    benchmark:
        "results/benchmarks/bench_table/{model}.tsv"
    conda:
        "../../envs/qwen3repro.yaml"
    threads: 1
    script:
        "../../scripts/bench_table.py"
