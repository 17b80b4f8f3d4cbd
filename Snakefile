# qwen3repro: Qwen3 from its source -> GGUF -> NumPy reference engine -> checks and reports.
# This file is the table of contents; each stage lives in workflow/rules/<stage>.smk and its logic
# in the qwen3repro package.
#
#   snakemake --cores 2                                    embedded default model, offline
#   snakemake --cores 2 --configfile config/qwen3-0.6b.yaml   the real Qwen3-0.6B (needs network)
#   snakemake --profile profiles/slurm --configfile config/qwen3-family.yaml   0.6B to 32B on a cluster

import sys

from qwen3repro.config import validate_config, with_layers
from qwen3repro.errors import UserError

# The default config only when none is given: --configfile would otherwise be merged into it.
if not config:

    configfile: "config/config.yaml"


try:
    # in place: rules and scripts read this very dict
    layered = with_layers(config, workflow.configfiles)
    config.clear()
    config.update(layered)
    validate_config(config)
except UserError as e:
    sys.exit(f"qwen3repro: error: {e}")


include: "workflow/rules/common.smk"
include: "workflow/rules/model.smk"
include: "workflow/rules/convert.smk"
include: "workflow/rules/samples.smk"
include: "workflow/rules/bench.smk"
include: "workflow/rules/accuracy.smk"
include: "workflow/rules/sweep.smk"
include: "workflow/rules/tasks.smk"
include: "workflow/rules/verify.smk"
include: "workflow/rules/report.smk"


# Under a cluster executor these run on the submitting host (config: cluster.localrules); the
# localrules directive takes literal names only, so the config's list goes to what it calls.
workflow.localrules(*config["cluster"]["localrules"])


rule all:
    default_target: True
    input:
        model_dirs(),
        gguf_files(),
        samples_files(),
        bench_tables(),
        accuracy_tables(),
        sweep_files(),
        tasks_tables(),
        verify_files(),
        "results/report/index.html",
