# GGUF files at every configured file type, each with a JSON manifest (sha256, size,
# bits per weight, per-tensor type and error), written tensor by tensor; and the importance matrix
# (collected by the engine with the F32 file over the calibration text) for the "-imat" twins.


rule convert:
    input:
        model_dir="results/models/{model}",
        imatrix=imatrix_input,
    output:
        gguf="results/gguf/{model}/{model}-{type}.gguf",
        manifest="results/gguf/{model}/{model}-{type}.json",
    log:
        "results/logs/convert/{model}-{type}.log",
    benchmark:
        "results/benchmarks/convert/{model}-{type}.tsv"
    priority: longest_chain("convert")
    conda:
        "../../envs/qwen3repro.yaml"
    threads: convert_threads
    resources:
        **needs("convert"),
    params:
        imatrix=imatrix_input,
    script:
        "../../scripts/convert.py"


rule calibration:
    output:
        text="results/corpus/calibration.txt",
        manifest="results/corpus/calibration.json",
    log:
        "results/logs/corpus/calibration.log",
    benchmark:
        "results/benchmarks/corpus/calibration.tsv"
    priority: longest_chain("calibration")
    conda:
        "../../envs/qwen3repro.yaml"
    threads: 1
    params:
        spec=config["convert"]["imatrix"]["calibration"],
        part="train",
    script:
        "../../scripts/corpus.py"


rule imatrix:
    input:
        gguf="results/gguf/{model}/{model}-F32.gguf",
        text="results/corpus/calibration.txt",
    output:
        "results/imatrix/{model}.gguf",
    log:
        "results/logs/imatrix/{model}.log",
    benchmark:
        "results/benchmarks/imatrix/{model}.tsv"
    priority: longest_chain("imatrix")
    conda:
        "../../envs/qwen3repro.yaml"
    threads: 1  # pinned: OpenBLAS on one thread (qwen3repro.numerics)
    resources:
        **needs("imatrix"),
    params:
        n_ctx=lambda w: settings(w, "convert")["imatrix"]["n_ctx"],
        chunks=lambda w: settings(w, "convert")["imatrix"]["chunks"],
    script:
        "../../scripts/imatrix.py"
