"""Rule bench_gguf: numpy and llama.cpp on one GGUF file, interleaved, as llama-bench measures; then
numpy-low-memory's short tests where bench.low_memory names the type."""

import json
from pathlib import Path

from qwen3repro.bench.measure import bench_gguf
from qwen3repro.fsutil import write_text_atomic
from qwen3repro.pipeline.rulelog import rule_log

with rule_log(snakemake):
    settings = snakemake.params.settings
    records = bench_gguf(
        snakemake.input.gguf, settings["engines"], settings, snakemake.threads, snakemake.wildcards.type
    )
    write_text_atomic(Path(snakemake.output[0]), json.dumps(records, indent=1) + "\n", force=True)
