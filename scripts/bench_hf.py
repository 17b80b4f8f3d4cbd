"""Rule bench_hf: transformers on the Hugging Face weights in one dtype, as llama-bench measures."""

import json
from pathlib import Path

from qwen3repro.bench.measure import bench_hf
from qwen3repro.fsutil import write_text_atomic
from qwen3repro.pipeline.rulelog import rule_log

with rule_log(snakemake):
    records = bench_hf(
        snakemake.input.model_dir, snakemake.wildcards.engine, snakemake.params.settings, snakemake.threads
    )
    write_text_atomic(Path(snakemake.output[0]), json.dumps(records, indent=1) + "\n", force=True)
