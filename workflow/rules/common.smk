# Helpers shared by the rules: which models there are and what each needs.

import re
from pathlib import Path

from qwen3repro.bench import memory_mb as bench_memory_mb
from qwen3repro.sources import memory_mb


wildcard_constraints:
    model="|".join(map(re.escape, config["models"])),
    type="|".join(map(re.escape, config["convert"]["types"])),


def model_dirs():
    return expand("results/models/{model}", model=config["models"])


def model_spec(wildcards):
    return config["models"][wildcards.model]


def model_threads(wildcards):
    """Training uses every core it is given; building or downloading a model uses one."""
    return workflow.cores if config["models"][wildcards.model]["source"] == "trained" else 1


def model_mem_mb(wildcards):
    return memory_mb(config["models"][wildcards.model])


def gguf_files():
    return expand(
        "results/gguf/{model}/{model}-{type}.gguf",
        model=config["models"],
        type=config["convert"]["types"],
    )


def safetensors_bytes(model_dir):
    return sum(p.stat().st_size for p in Path(model_dir).glob("*.safetensors"))


def convert_mem_mb(wildcards, input):
    """Tensors are converted one at a time; twice the weights' size bounds the largest in float32."""
    weights = safetensors_bytes(input.model_dir)
    return 1024 + 2 * weights // 2**20


def samples_files():
    return expand("results/samples/{model}.json", model=config["models"])


def samples_mem_mb(wildcards, input):
    """The F32 file is mapped once; an untrained twin of the same size may be built beside it."""
    return 1024 + 3 * Path(input.gguf).stat().st_size // 2**20


def bench_parts(wildcards):
    settings = config["bench"]
    gguf_engines = [e for e in settings["engines"] if e in ("numpy", "llama.cpp")]
    parts = [f"results/bench/{wildcards.model}/{t}.json" for t in settings["types"]] if gguf_engines else []
    parts += [f"results/bench/{wildcards.model}/{e}.json" for e in settings["engines"] if e.startswith("transformers")]
    return parts


def bench_tables():
    return expand("results/bench/{model}.csv", model=config["models"])


def gguf_mem_mb(gguf):
    """Evaluated again once the file exists; a dry run sees only a placeholder."""
    return bench_memory_mb(gguf) if Path(gguf).exists() else 1024


def bench_gguf_mem_mb(wildcards, input):
    return gguf_mem_mb(input.gguf)


def bench_hf_mem_mb(wildcards, input):
    """transformers loads the weights and keeps one float32 copy."""
    weights = safetensors_bytes(input.model_dir)
    return 2048 + 3 * weights // 2**20


def accuracy_tables():
    return expand("results/{stage}/{model}.csv", stage=["check", "perplexity"], model=config["models"])


def check_mem_mb(wildcards, input):
    """The engine holds the weights in float32 and transformers a float32 copy of its own."""
    weights = safetensors_bytes(input.model_dir)
    return 2048 + 2 * gguf_mem_mb(input.gguf) + 3 * weights // 2**20


def perplexity_mem_mb(wildcards, input):
    """Two engines (the file and the F32 base), and a chunk's logits from each in float32."""
    return 2048 + gguf_mem_mb(input.gguf) + gguf_mem_mb(input.base)



def sweep_files():
    return expand("results/sweep/{model}/{type}.parquet", model=config["models"], type=config["sweep"]["types"])


def report_inputs(wildcards):
    """Every file the report reads; files inside a model directory are that directory's."""
    from qwen3repro.report import inputs

    paths = set()
    for model, files in inputs(config).items():
        model_dir = Path("results/models") / model
        paths.update(str(model_dir if model_dir in p.parents else p) for p in files.values())
    return sorted(paths)
