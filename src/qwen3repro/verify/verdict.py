"""Compares a run with its model's committed reference, file by file and figure by figure, and says so.

A reference (config/reference/<model>.yaml) names the recipe it was made from (the model's config
entry) and what that recipe must give: `exact`, the sha256 of files that are the same bytes on
every machine (a synthetic model's safetensors, its GGUF files; a Hub model's files at its pinned
revision; a trained model's weights and files, made with pinned arithmetic), and `figures`, measured
values with the tolerance their measured spread allows (the NumPy engine's perplexity follows the
machine's BLAS in its last digits). A trained model's reference also names the library versions its
bits were made with (`numerics`) and the looser `fallback` figures a run is held to where those bits
cannot be promised (another CPU family, another torch): the verdict then says so, and why. A run
whose recipe differs from the reference's has nothing to be compared with, and says so.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from qwen3repro.errors import UserError
from qwen3repro.fsutil import sha256_file, write_json_atomic, write_text_atomic

TIMED = "training_curve.csv"
# The libraries whose version decides a trained model's bits (its reference names them)
PINNED_VERSIONS = ("torch", "mkl", "numpy", "openblas")


def load_reference(path: Path | str) -> dict | None:
    """The reference file, or None when the model has none."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        reference = yaml.safe_load(path.read_text("utf-8"))
    except yaml.YAMLError as e:
        raise UserError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(reference, dict) or not isinstance(reference.get("recipe"), dict):
        raise UserError(f"{path}: a reference needs a `recipe` mapping (the model's config entry)")
    return reference


# the keys of a model's config entry that its source reads; the schema fills in seed and dtype for
# every model, and a Hub or local model's bytes depend on neither
RECIPE_KEYS = {
    "hub": ("source", "repo_id", "revision"),
    "local": ("source", "path"),
    "synthetic": ("source", "preset", "architecture", "seed", "dtype"),
    "trained": ("source", "preset", "architecture", "training", "seed", "dtype"),
}


def recipe(spec: dict) -> dict:
    """The parts of a model's config entry that decide its bytes: those its source reads; not its
    description, nor the stages it goes through, nor training's thread count (pinned arithmetic gives
    the same bits at any)."""
    keys = RECIPE_KEYS.get(spec.get("source")) or [k for k in spec if k not in ("description", "stages")]
    kept = {k: v for k, v in spec.items() if k in keys}
    if isinstance(kept.get("training"), dict):
        kept["training"] = {k: v for k, v in kept["training"].items() if k != "threads"}
    return kept


def file_hashes(model_dir: Path, gguf_dir: Path, model: str) -> dict[str, str]:
    """sha256 of every model file (as its manifest lists them) and of every GGUF file, hashed now."""
    manifest = json.loads((model_dir / "manifest.json").read_text("utf-8"))
    # the training curve records seconds: the one model file whose bytes depend on the machine
    hashes = {f"model/{name}": sha256_file(model_dir / name) for name in manifest["files"] if name != TIMED}
    for path in sorted(gguf_dir.glob(f"{model}-*.gguf")):
        hashes[f"gguf/{path.name}"] = sha256_file(path)
    return hashes


def run_figures(model_dir: Path, perplexity_dir: Path | None) -> dict[str, float]:
    """The figures a reference may name: the trained model's held-out loss, each file type's PPL."""
    manifest = json.loads((model_dir / "manifest.json").read_text("utf-8"))
    figures = {"held_out_loss": manifest["final_held_out_loss"]} if "final_held_out_loss" in manifest else {}
    for path in sorted(perplexity_dir.glob("*.json")) if perplexity_dir and perplexity_dir.is_dir() else []:
        figures[f"ppl/{path.stem}"] = json.loads(path.read_text("utf-8"))["perplexity"]["ppl"]
    return figures


def run_numerics(model_dir: Path) -> dict | None:
    """The arithmetic a trained model was made with (qwen3repro.numerics.in_force), from its manifest."""
    return json.loads((model_dir / "manifest.json").read_text("utf-8")).get("numerics")


def unpromised(reference: dict | None, numerics: dict | None) -> str | None:
    """Why this run's bits cannot be held to the reference's (None where they can): its arithmetic was
    not pinned, or a library that decides it is another version than the reference was made with."""
    made_with = (reference or {}).get("numerics")
    if not made_with:
        return None
    if numerics is None:
        return "the model's manifest records no pinned arithmetic"
    if not numerics.get("pinned"):
        return numerics.get("why_not") or "its arithmetic was not pinned"
    for name, version in made_with.items():
        if numerics.get(name) != version:
            return f"{name} {numerics.get(name)}, the reference was made with {version}"
    return None


def hub_rows(model_dir: Path, hashes: dict[str, str]) -> list[dict]:
    """A Hub model's files against the Hub's own record at the pinned commit (from its manifest):
    sha256 for LFS files (already in `hashes`, from file_hashes), the git blob id for the others.
    Empty for other sources."""
    from qwen3repro.model.hub import matches_record

    manifest = json.loads((model_dir / "manifest.json").read_text("utf-8"))
    rows = []
    for name, record in (manifest.get("hub_files") or {}).items():
        ok = matches_record(model_dir / name, record, hashes.get(f"model/{name}"))
        expected = record.get("sha256") or record.get("git_blob")
        rows.append({"item": f"hub/{name}", "kind": "hub record", "expected": expected, "got": ok, "ok": ok})
    return rows


def in_run(name: str, model: str, types: list[str] | None) -> bool:
    """Whether a reference's item is one the run makes: a config may convert fewer file types than the
    reference lists (config/bench-0.6b-shape.yaml converts 6 of qwen3-0.6b-shape's 17)."""
    if types is None or not name.startswith("gguf/"):
        return True
    return name in {f"gguf/{model}-{t}.gguf" for t in types}


def compare(
    reference: dict, hashes: dict[str, str], figures: dict[str, float] | None = None, types: list[str] | None = None
) -> list[dict]:
    """One row per item of the reference that the run makes (its file `types`): what was expected, what
    the run gave, and whether it matches."""
    rows = []
    for name, expected in (reference.get("exact") or {}).items():
        if not in_run(name, reference.get("model", ""), types):
            continue
        got = hashes.get(name)
        rows.append({"item": name, "kind": "sha256", "expected": expected, "got": got, "ok": got == expected})
    for name, spec in (reference.get("figures") or {}).items():
        got = (figures or {}).get(name)
        ok = got is not None and abs(got - spec["value"]) <= spec["tolerance"]
        rows.append(
            {
                "item": name,
                "kind": "figure",
                "expected": spec["value"],
                "tolerance": spec["tolerance"],
                "got": got,
                "ok": ok,
            }
        )
    return rows


def verdict(
    model: str,
    spec: dict,
    reference: dict | None,
    hashes: dict[str, str],
    figures: dict[str, float] | None = None,
    hub: list[dict] | None = None,
    types: list[str] | None = None,
    numerics: dict | None = None,
) -> dict:
    """`hub`: a Hub model's rows against the Hub's record (hub_rows), checked with or without a reference.
    `numerics`: the arithmetic the model was made with (run_numerics), for a reference that names its own."""
    hub = hub or []
    if reference is not None and reference["recipe"] != recipe(spec):
        differing = sorted(
            k for k in set(reference["recipe"]) | set(recipe(spec)) if reference["recipe"].get(k) != recipe(spec).get(k)
        )
        return {
            "model": model,
            "verdict": "not comparable",
            "items": [],
            "summary": f"{model}: the config's recipe differs from the reference's ({', '.join(differing)})",
        }
    if reference is None and not hub:
        return {
            "model": model,
            "verdict": "no reference",
            "summary": f"{model}: no reference to compare with",
            "items": [],
        }
    why_not = unpromised(reference, numerics)
    if why_not:  # held to the looser figures alone, and said so
        reference = {"model": reference["model"], "figures": reference.get("fallback") or {}}
    rows = hub + compare(reference or {}, hashes, figures, types)
    parts = [f"bits not promised here ({why_not}), so only the fallback figures are checked"] if why_not else []
    if hub:
        commit = (spec.get("revision") or "")[:12]
        parts.append(f"{sum(r['ok'] for r in hub)}/{len(hub)} files identical to the Hub's record at {commit}")
    files = [r for r in rows if r["kind"] == "sha256"]
    if files:
        parts.append(f"{sum(r['ok'] for r in files)}/{len(files)} files identical to the reference")
    elif hub:
        parts.append("no GGUF hashes in the reference yet (add them from this run: qwen3repro reference --force)")
    for r in rows:
        if r["kind"] == "figure":
            got = "missing" if r["got"] is None else f"{r['got']:.4f}"
            within = "within" if r["ok"] else "not within"
            parts.append(f"{r['item']} {got} {within} {r['tolerance']:g} of {r['expected']:.4f}")
    ok = all(r["ok"] for r in rows)
    return {
        "model": model,
        "verdict": ("within fallback bounds" if why_not else "reproduced") if ok else "differs",
        "bits_promised": why_not is None,
        "items": rows,
        "summary": f"{model}: {'; '.join(parts)}",
    }


def mismatch_line(result: dict) -> str:
    """The one-line error for a run that differs: the first item that does not match, and how many more."""
    bad = [r for r in result["items"] if not r["ok"]]
    first = bad[0]
    more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
    if first["kind"] == "hub record":
        got, expected = "differs from", f"the Hub's record {first['expected'][:16]}…"
        return f"{result['model']}: does not reproduce the reference: {first['item']} {got} {expected}{more}"
    if first["kind"] == "figure":
        got = "missing" if first["got"] is None else f"{first['got']:.6g}"
        expected = f"{first['expected']:.6g} ± {first['tolerance']:g}"
    else:
        got = "missing" if first["got"] is None else f"sha256 {first['got'][:16]}…"
        expected = f"{first['expected'][:16]}…"
    return f"{result['model']}: does not reproduce the reference: {first['item']} {got}, reference {expected}{more}"


def write_verdict(
    model: str,
    spec: dict,
    model_dir: Path | str,
    gguf_dir: Path | str,
    reference_path: Path | str,
    out: Path | str,
    strict: bool = True,
    perplexity_dir: Path | str | None = None,
    types: list[str] | None = None,
) -> dict:
    """results/verify/<model>.json; with `strict`, a run that differs fails with one line. The
    figures (held-out loss, each type's PPL) are read from the model and `perplexity_dir`."""
    model_dir = Path(model_dir)
    figures = run_figures(model_dir, Path(perplexity_dir) if perplexity_dir else None)
    hashes = file_hashes(model_dir, Path(gguf_dir), model)
    reference = load_reference(reference_path)
    numerics = run_numerics(model_dir)
    result = verdict(model, spec, reference, hashes, figures, hub_rows(model_dir, hashes), types, numerics)
    result["reference"] = str(reference_path)
    if result["verdict"] == "differs" and strict:
        raise UserError(mismatch_line(result))
    write_json_atomic(out, result)
    return result


def write_reference(
    model: str,
    spec: dict,
    model_dir: Path | str,
    gguf_dir: Path | str,
    out: Path | str,
    force: bool = False,
    perplexity_dir: Path | str | None = None,
) -> dict:
    """A reference made from a run: the recipe and the sha256 of every file it produced. For a
    synthetic model (and a Hub model: its files are fixed by the pinned revision) these are the
    same bytes on every machine; for a trained model, on every machine that takes the pinned
    arithmetic, whose library versions it names. The figures and fallback figures of the reference
    it replaces are kept by name and bound, each with this run's value: a bound comes from a
    measured spread, which one run cannot give (a perplexity's bound scales with its value, as a
    loss's spread moves PPL by a factor)."""
    out = Path(out)
    hashes = file_hashes(Path(model_dir), Path(gguf_dir), model)
    reference = {"model": model, "recipe": recipe(spec)}
    numerics = run_numerics(Path(model_dir))
    if numerics:
        reference["numerics"] = {k: numerics.get(k) for k in PINNED_VERSIONS}
    reference["exact"] = hashes
    kept = (load_reference(out) or {}) if force else {}
    measured = run_figures(Path(model_dir), Path(perplexity_dir) if perplexity_dir else None)
    for kind in ("figures", "fallback"):
        if kept.get(kind):
            reference[kind] = {name: rebased(name, bound, measured) for name, bound in kept[kind].items()}
    header = (
        f"# What a run of the model {model} must reproduce, file by file (sha256).\n"
        f"# Made by: qwen3repro reference --model {model} (from a run's results/).\n"
    )
    write_text_atomic(out, header + yaml.safe_dump(reference, sort_keys=False), force=force)
    return reference


def rebased(name: str, bound: dict, measured: dict[str, float]) -> dict:
    """A kept figure's bound around this run's value of it."""
    if name not in measured:
        raise UserError(f"the run has no {name} to make the reference's figure from")
    value, tolerance = float(measured[name]), float(bound["tolerance"])
    if name.startswith("ppl/"):
        tolerance *= value / float(bound["value"])
    return {"value": value, "tolerance": float(f"{tolerance:.3g}")}


def perplexity_inputs(reference_path: Path | str, model: str) -> list[str]:
    """The perplexity results a reference's figures need, for the rule's inputs."""
    reference = load_reference(reference_path) or {}
    names = {*(reference.get("figures") or {}), *(reference.get("fallback") or {})}
    return [
        f"results/perplexity/{model}/{name.removeprefix('ppl/')}.json"
        for name in sorted(names)
        if name.startswith("ppl/")
    ]
