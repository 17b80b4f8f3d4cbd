# Helpers shared by the rules: which models there are and what each needs.

import re
from pathlib import Path

from snakemake.exceptions import WorkflowError

from qwen3repro.pipeline import jobs, priorities
from qwen3repro.pipeline.parts import part_files
from qwen3repro.bench.runtimes import GGUF_ENGINES
from qwen3repro.config import file_variants, model_settings, runs
from qwen3repro.accuracy.task_sets import active_sets, set_file, set_format
from qwen3repro.convert.tensor_plan import split_variant
from qwen3repro.verify.verdict import perplexity_inputs


wildcard_constraints:
    model="|".join(map(re.escape, config["models"])),
    type="|".join(map(re.escape, file_variants(config))),


def model_dirs():
    return expand("results/models/{model}", model=config["models"])


def model_spec(wildcards):
    """The model's entry less the stages it goes through: what builds it."""
    return {k: v for k, v in config["models"][wildcards.model].items() if k != "stages"}


def settings(wildcards, stage):
    """A stage's settings for the job's model (the top-level section with the model's overrides)."""
    found = model_settings(config, wildcards.model)[stage]
    if found is None:
        raise WorkflowError(f"model {wildcards.model} skips the {stage} stage (models.{wildcards.model}.stages)")
    return found


def models_running(stage):
    return [m for m in config["models"] if runs(config, m, stage)]


def trained(wildcards):
    """A model trained here (its samples also run an untrained twin of it)."""
    return config["models"][wildcards.model]["source"] == "trained"


def longest_chain(rule):
    """A job's priority: the number of jobs on the longest chain waiting on it, read from the DAG
    (qwen3repro.pipeline.priorities), so that long chains start first."""
    return lambda wildcards: priorities.chain_priority(workflow.dag, rule, dict(wildcards.items()))


THREADS = config["cluster"]["threads"]
BENCH_THREADS = config["bench"]["threads"]


def model_threads(wildcards):
    """Training uses the threads its config gives it; building or downloading a model uses one."""
    if not trained(wildcards):
        return 1
    return config["models"][wildcards.model]["training"].get("threads") or THREADS


def convert_threads(wildcards):
    """One thread to convert a small model, the cluster's threads for a large one (resources.convert_threads)."""
    return jobs.resources.convert_threads(config["models"][wildcards.model], THREADS)


def needs(rule):
    """A rule's memory and time limit (qwen3repro.pipeline.jobs.RULES); a rule with none there takes the
    profile's default-resources."""
    return jobs.needs(config, rule)


def model_ggufs(wildcards):
    """Every file type of the job's model, in the config's order (the part jobs score them all)."""
    return expand(
        "results/gguf/{model}/{model}-{type}.gguf", model=wildcards.model, type=file_variants(config, wildcards.model)
    )


def stage_parts(wildcards, stage):
    """A scattered stage's part files for the job's model: each runtime's `parts`."""
    found = settings(wildcards, stage)
    return part_files(f"results/{stage}/{wildcards.model}/parts", found["runtimes"], found["parts"])


def gguf_files():
    return [
        f"results/gguf/{model}/{model}-{type}.gguf"
        for model in config["models"]
        for type in file_variants(config, model)
    ]


def imatrix_input(wildcards):
    """The importance matrix a "-imat" file is quantized with (and checked against); none otherwise."""
    return f"results/imatrix/{wildcards.model}.gguf" if split_variant(wildcards.type)[1] else []


def samples_files():
    return expand("results/samples/{model}.json", model=models_running("samples"))


def bench_parts(wildcards):
    bench = settings(wildcards, "bench")
    gguf_engines = [e for e in bench["engines"] if e in GGUF_ENGINES]
    types = bench["types"] if gguf_engines else []
    types += [t for t in bench["low_memory"]["types"] if t not in types]
    parts = [f"results/bench/{wildcards.model}/{t}.json" for t in types]
    parts += [f"results/bench/{wildcards.model}/{e}.json" for e in bench["engines"] if e.startswith("transformers")]
    return parts


def bench_tables():
    return expand("results/bench/{model}.csv", model=models_running("bench"))


def accuracy_tables():
    return [f"results/{stage}/{model}.csv" for stage in ("check", "perplexity") for model in models_running(stage)]


def perplexity_low_memory(wildcards, input):
    """Low-memory mode where the weights in float32 would not fit a job (cluster.mem_mb)."""
    return jobs.perplexity_low_memory(jobs.Job(config, wildcards, input, 1))


def traces_reference(wildcards):
    """The first sweep type's traces, along whose tokens every other type is also traced."""
    first = settings(wildcards, "sweep")["types"][0]
    if wildcards.type == first:
        return []
    return f"results/sweep/{wildcards.model}/{first}-traces.json"


def sweep_files():
    return [
        f"results/sweep/{model}/{type}.parquet"
        for model in models_running("sweep")
        for type in model_settings(config, model)["sweep"]["types"]
    ]


def verify_files():
    return expand("results/verify/{model}.json", model=config["models"])


def report_inputs(wildcards):
    """Every file the report reads; files inside a model directory are that directory's."""
    from qwen3repro.report.inputs import inputs

    paths = set()
    for model, files in inputs(config).items():
        model_dir = Path("results/models") / model
        paths.update(str(model_dir if model_dir in p.parents else p) for p in files.values())
    return sorted(paths)


# ------------------------------------------------------------------ tasks
def task_set_spec(name):
    """A task set's entry, from whichever model's tasks settings name it (set names are shared)."""
    for model in models_running("tasks"):
        found = active_sets(model_settings(config, model)["tasks"]).get(name)
        if found is not None:
            return found
    raise WorkflowError(f"no task set named {name} in tasks.sets")


def task_sets(wildcards):
    """The job's sets: name -> (file, format)."""
    found = active_sets(settings(wildcards, "tasks"))
    return {name: (set_file(name, spec), set_format(spec)) for name, spec in found.items()}


def task_set_files(wildcards):
    return [path for path, _ in task_sets(wildcards).values()]


def generation_settings(wildcards):
    """The sweep's prompts and conversations (the model's own sweep settings where it has them)."""
    return model_settings(config, wildcards.model)["sweep"] or config["sweep"]


def generations_input(wildcards):
    if not settings(wildcards, "tasks")["generated"]:
        return []
    return f"results/tasks/{wildcards.model}/generations.json"


def tasks_tables():
    return expand("results/tasks/{model}.csv", model=models_running("tasks"))
