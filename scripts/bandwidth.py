"""Rule bandwidth: this machine's memory bandwidth for decode-shaped work (a float32 GEMV probe)."""

import json
from pathlib import Path

from qwen3repro.bench.roofline import bandwidth_probe
from qwen3repro.fsutil import write_text_atomic
from qwen3repro.rulelog import rule_log

with rule_log(snakemake) as log:
    bandwidth = bandwidth_probe(snakemake.threads)
    log.info("memory bandwidth %.1f GB/s with %d threads", bandwidth / 1e9, snakemake.threads)
    write_text_atomic(
        Path(snakemake.output[0]),
        json.dumps({"bandwidth_bytes_per_s": bandwidth, "threads": snakemake.threads}) + "\n",
        force=True,
    )
