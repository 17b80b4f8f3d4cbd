# Helpers shared by the rules: which models there are and what each needs.

import re

from qwen3repro.sources import memory_mb


wildcard_constraints:
    model="|".join(map(re.escape, config["models"])),


def model_dirs():
    return expand("results/models/{model}", model=config["models"])


def model_spec(wildcards):
    return config["models"][wildcards.model]


def model_mem_mb(wildcards):
    return memory_mb(config["models"][wildcards.model])
