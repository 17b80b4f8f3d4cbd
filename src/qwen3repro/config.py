"""Loads the pipeline config and validates it against its JSON schema, filling in defaults."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import jsonschema
import yaml

from qwen3repro.errors import UserError


def schema() -> dict:
    return yaml.safe_load(resources.files("qwen3repro.data").joinpath("config.schema.yaml").read_text("utf-8"))


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
    for stage, verb in (("bench", "measure"), ("sweep", "sweep")):
        missing = [t for t in config[stage]["types"] if t not in file_variants(config)]
        if missing:
            raise UserError(f"config: {stage}.types: {', '.join(missing)} not in convert.types, so no file to {verb}")
    from qwen3repro.sweep.grid import check_settings

    try:
        check_settings(config["sweep"])
    except UserError as e:
        raise UserError(f"config: {e}") from None
    corpus, calibration = config["perplexity"]["corpus"], config["convert"]["imatrix"]["calibration"]
    # Shakespeare calibrates on the training works and scores on the held-out ones; a local file must differ
    if calibration["source"] == corpus["source"] == "local" and calibration["path"] == corpus["path"]:
        raise UserError("config: convert.imatrix.calibration is the perplexity corpus; calibrate on another text")
    if corpus["source"] == "shakespeare":
        for name, spec in config["models"].items():
            every = spec.get("training", {}).get("held_out_every", 10)
            if spec["source"] == "trained" and every != corpus["held_out_every"]:
                raise UserError(
                    f"config: perplexity.corpus.held_out_every is {corpus['held_out_every']} but model {name} "
                    f"holds out every {every}th work: it would be scored on text it was trained on"
                )
    return config


def file_variants(config: dict) -> list[str]:
    """Every GGUF file a run makes per model: convert.types, then the importance-matrix twins."""
    from qwen3repro.convert.tensor_plan import IMATRIX_SUFFIX

    return list(config["convert"]["types"]) + [t + IMATRIX_SUFFIX for t in config["convert"]["imatrix"]["types"]]


def load_config(path: Path | str) -> dict:
    path = Path(path)
    try:
        text = path.read_text("utf-8")
    except FileNotFoundError:
        raise UserError(f"{path}: config file does not exist") from None
    try:
        config = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise UserError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from e
    try:
        return validate_config(config)
    except UserError as e:
        raise UserError(f"{path}: {e}") from None
