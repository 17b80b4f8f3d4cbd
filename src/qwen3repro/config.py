"""Loads the pipeline config and validates it against its JSON schema, filling in defaults."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import jsonschema
import yaml

from qwen3repro.errors import UserError


def schema() -> dict:
    return yaml.safe_load(resources.files("qwen3repro.data").joinpath("config.schema.yaml").read_text("utf-8"))


def schema_defaults(*path: str | int) -> dict:
    """The defaults of the properties at `path` in the schema (e.g. "$defs", "training"), for code
    that fills in settings a caller left out: one source for them, the schema."""
    node = schema()
    for key in path:
        node = node[key]
    return {name: sub["default"] for name, sub in node["properties"].items() if "default" in sub}


def _with_defaults(validator_class):
    """A validator that also writes each property's `default` into the instance, as Snakemake's does."""
    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for name, subschema in properties.items():
                if "default" in subschema:
                    instance.setdefault(name, subschema["default"])
        yield from validate_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(validator_class, {"properties": set_defaults})


def _where(error: jsonschema.ValidationError) -> str:
    return ".".join(str(p) for p in error.absolute_path) or "(top level)"


def validate_config(config: dict) -> dict:
    """Validate in place (defaults filled in) and return `config`; a one-line UserError otherwise."""
    if not isinstance(config, dict):
        raise UserError(f"config: expected a mapping at the top level, got {type(config).__name__}")
    s = schema()
    validator = _with_defaults(jsonschema.validators.validator_for(s))(s)
    error = jsonschema.exceptions.best_match(validator.iter_errors(config))
    if error is not None:
        raise UserError(f"config: {_where(error)}: {error.message}")
    _check_sections(config, "")
    for name, spec in config["models"].items():
        if spec.get("stages"):
            _check_model_stages(config, name, validator)
    _check_task_sets(config)
    corpus, calibration = config["perplexity"]["corpus"], config["convert"]["imatrix"]["calibration"]
    # Shakespeare calibrates on the training works and scores on the held-out ones; a local file must differ
    if calibration["source"] == corpus["source"] == "local" and calibration["path"] == corpus["path"]:
        raise UserError("config: convert.imatrix.calibration is the perplexity corpus; calibrate on another text")
    if corpus["source"] == "shakespeare":
        trained = {name: spec["training"] for name, spec in config["models"].items() if spec["source"] == "trained"}
        for name, every in ((name, t["held_out_every"]) for name, t in trained.items()):
            if every != corpus["held_out_every"]:
                raise UserError(
                    f"config: perplexity.corpus.held_out_every is {corpus['held_out_every']} but model {name} "
                    f"holds out every {every}th work: it would be scored on text it was trained on"
                )
    return config


def _check_sections(sections: dict, where: str) -> None:
    """What the schema cannot say: the files a stage reads are ones convert makes; the sweep's cells."""
    for stage, verb in (("bench", "measure"), ("sweep", "sweep")):
        if sections[stage] is None:
            continue
        keys = [("types", sections[stage]["types"])]
        if stage == "bench":
            keys.append(("low_memory.types", sections[stage]["low_memory"]["types"]))
        for key, types in keys:
            missing = [t for t in types if t not in _variants(sections["convert"])]
            if missing:
                raise UserError(
                    f"config: {where}{stage}.{key}: {', '.join(missing)} not in {where}convert.types, "
                    f"so no file to {verb}"
                )
    if sections["sweep"] is not None:
        from qwen3repro.sweep.grid import check_settings

        try:
            check_settings(sections["sweep"])
        except UserError as e:
            raise UserError(f"config: {where}{e}") from None


# ------------------------------------------------------------------ per-model stages
STAGES = ("convert", "samples", "bench", "check", "perplexity", "sweep", "tasks")
# read by jobs that serve every model (one corpus, one calibration text) or must agree (the bench's threads)
SHARED = (("perplexity", "corpus"), ("convert", "imatrix", "calibration"), ("bench", "threads"))


def _merge(base: dict, override: dict) -> dict:
    out = dict(base)
    for key, value in override.items():
        out[key] = _merge(base[key], value) if isinstance(value, dict) and isinstance(base.get(key), dict) else value
    return out


def model_settings(config: dict, model: str) -> dict:
    """Each stage's settings as they apply to one model: the top-level section with the model's
    `stages` entry merged in, or None where the model skips the stage."""
    overrides = config["models"][model].get("stages") or {}
    return {
        stage: None if overrides.get(stage) is False else _merge(config[stage], overrides.get(stage) or {})
        for stage in STAGES
    }


def runs(config: dict, model: str, stage: str) -> bool:
    return model_settings(config, model)[stage] is not None


def _check_model_stages(config: dict, model: str, validator) -> None:
    """A model's overrides, checked as the top-level sections are: against the schema, then across stages."""
    where = f"models.{model}.stages."
    overrides = config["models"][model]["stages"]
    for path in SHARED:
        entry = overrides
        for key in path:
            entry = entry.get(key) if isinstance(entry, dict) else None
        if entry is not None:
            raise UserError(f"config: {where}{'.'.join(path)}: shared by every model; set it at the top level")
    settings = model_settings(config, model)
    merged = {**config, **{stage: value or config[stage] for stage, value in settings.items()}}
    error = jsonschema.exceptions.best_match(validator.iter_errors(merged))
    if error is not None:
        raise UserError(f"config: {where}{_where(error)}: {error.message}")
    _check_sections(settings, where)


def _check_task_sets(config: dict) -> None:
    """A task set's file is built once and named by the set (results/tasks/sets/<name>), so two models
    may share a name only where they mean the same set."""
    first: dict[str, tuple[str, dict]] = {}
    for model in config["models"]:
        tasks = model_settings(config, model)["tasks"]
        for name, spec in (tasks or {"sets": {}})["sets"].items():
            if spec is False:
                continue
            seen = first.setdefault(name, (model, spec))
            if seen[1] != spec:
                raise UserError(
                    f"config: task set {name} differs between models {seen[0]} and {model}; "
                    "its file is shared by name: give one of them another name"
                )


def _variants(convert: dict) -> list[str]:
    from qwen3repro.convert.tensor_plan import IMATRIX_SUFFIX

    return list(convert["types"]) + [t + IMATRIX_SUFFIX for t in convert["imatrix"]["types"]]


def file_variants(config: dict, model: str | None = None) -> list[str]:
    """Every GGUF file a run makes for a model: its convert.types, then the importance-matrix twins;
    without a model, those of every model."""
    if model is not None:
        return _variants(model_settings(config, model)["convert"])
    return list(dict.fromkeys(t for name in config["models"] for t in file_variants(config, name)))


def _read(path: Path) -> dict:
    try:
        text = path.read_text("utf-8")
    except FileNotFoundError:
        raise UserError(f"{path}: config file does not exist") from None
    try:
        config = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise UserError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from e
    return config


def _over(base: dict, top: dict) -> dict:
    """`top` over `base`, mappings merged key by key, anything else replaced; `top`'s keys first, so
    a config that layers a model under its own keeps its own order of models."""
    out = {}
    for key, value in top.items():
        below = base.get(key)
        out[key] = _over(below, value) if isinstance(value, dict) and isinstance(below, dict) else value
    out.update((key, value) for key, value in base.items() if key not in top)
    return out


def _layers_of(path: Path, config: dict, seen: tuple[Path, ...]) -> dict:
    """What a config file's `layers:` (paths relative to it, in order) add up to, each with its own
    layers beneath it."""
    layers = (config.get("layers") if isinstance(config, dict) else None) or []
    if not isinstance(layers, list) or not all(isinstance(name, str) for name in layers):
        raise UserError(f"{path}: layers: expected a list of config files, got {layers!r}")
    merged: dict = {}
    for name in layers:
        layer = (path.parent / name).resolve()
        if layer in seen:
            raise UserError(f"{path}: layers: {name} layers itself")
        if not layer.is_file():
            raise UserError(f"{path}: layers: {name} does not exist ({layer})")
        below = _read(layer)
        if not isinstance(below, dict):
            raise UserError(f"{layer}: expected a mapping at the top level")
        merged = _over(merged, _over(_layers_of(layer, below, (*seen, layer)), below))
    merged.pop("layers", None)
    return merged


def with_layers(config: dict, files) -> dict:
    """`config` (what Snakemake merged from `files`, its --configfile list) over the layers those
    files name, the `layers` key gone: a block shared by several configs (the wikitext corpus, the
    stand-in model) is written once, in a file the others layer."""
    base: dict = {}
    for file in files:
        path = Path(file).resolve()
        base = _over(base, _layers_of(path, _read(path), (path,)))
    merged = _over(base, config)
    merged.pop("layers", None)
    return merged


def load_config(path: Path | str) -> dict:
    path = Path(path)
    config = _read(path)
    if isinstance(config, dict):
        config = with_layers(config, [path])
    try:
        return validate_config(config)
    except UserError as e:
        raise UserError(f"{path}: {e}") from None
