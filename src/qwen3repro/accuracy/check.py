"""The accuracy gate: the engine on one GGUF file against transformers computing the same weights.

The gate checks the engine, not the quantization: transformers' Qwen3ForCausalLM (float32, eager
attention) is loaded with the weights of the file under test, dequantized by gguf-py, so that
every file type is held to the same tight bound whatever its quantization loss (which the
perplexity stage measures against the F32 file). Both run teacher-forced over the same tokens of a
prompt set (chat-formatted and plain text, several languages, a long corpus excerpt); every
position is compared (|Δlogit|, KL, argmax, llama.cpp's Δp), then both continue every prompt
greedily. The file itself is checked too: each tensor must be exactly what the converter makes of
the source weights at this file type, so a file changed after conversion fails.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np

from qwen3repro.accuracy.divergence import Divergence, compare
from qwen3repro.accuracy.reference import Reference
from qwen3repro.errors import UserError
from qwen3repro.fsutil import write_json_atomic, write_table
from qwen3repro.pipeline.progress import progress_bar

log = logging.getLogger(__name__)

# metric -> whether a larger value is worse ("max": the threshold is an upper bound)
METRICS = {
    "max_abs_dlogit": "max",
    "mean_abs_dlogit": "max",
    "kl_mean": "max",
    "kl_p99": "max",
    "kl_max": "max",
    "top1_agreement": "min",
    "rms_dp": "max",
    "greedy_match": "min",
    "greedy_agreement": "min",
    "tensors_differing": "max",
}


def workload(settings: dict) -> dict:
    """What a check runs, in each runtime: the prompts' tokens at most, the greedy tokens, and
    whether every tensor is encoded again (the cost model's measure of this stage)."""
    prompts = len(settings["prompts"])
    return {
        "prompt_tokens": prompts * settings["max_tokens"],
        "greedy_tokens": prompts * settings["greedy_tokens"],
        "reencode": settings["reencode"],
    }


def prompt_tokens(generator, prompts: list[dict], corpus_text: str | None, max_tokens: int) -> list[dict]:
    """Each configured prompt as token ids, at most `max_tokens` of them."""
    if not prompts:
        raise UserError("check: the prompt set is empty")
    out = []
    for i, p in enumerate(prompts):
        name = p.get("name", f"prompt {i}")
        if "messages" in p:
            tokens = generator.chat_prompt(p["messages"], thinking=p.get("thinking", True))
        elif "text" in p:
            tokens = generator.tokenizer.encode(p["text"], parse_special=False)
        elif "corpus_tokens" in p:
            if not corpus_text:
                raise UserError(f"check: prompt {name!r} takes its tokens from the corpus, and there is none")
            tokens = _corpus_head(generator.tokenizer, corpus_text, p["corpus_tokens"])
        else:
            raise UserError(f"check: prompt {name!r} has none of messages, text, corpus_tokens")
        if len(tokens) < 2:
            raise UserError(f"check: prompt {name!r} has {len(tokens)} token(s); at least 2 are needed")
        out.append(
            {
                "name": name,
                "kind": next(k for k in ("messages", "text", "corpus_tokens") if k in p),
                "tokens": tokens[:max_tokens],
            }
        )
    return out


def _corpus_head(tokenizer, text: str, n: int) -> list[int]:
    """The first n tokens of the text, tokenizing only as much of it as that takes."""
    chars = 8 * n
    while True:
        tokens = tokenizer.encode(text[:chars], parse_special=False)
        if len(tokens) > n + 16 or chars >= len(text):  # tokens near the cut may merge differently: keep clear
            return tokens[:n]
        chars *= 2


def engine_run(model, prompt: list[int], n_greedy: int) -> tuple[np.ndarray, list[int]]:
    """The engine's logits over the prompt, then its greedy continuation (end-of-text tokens do not stop it)."""
    logits = model.forward(prompt, start=0)
    greedy, last = [], logits[-1]
    for _ in range(n_greedy):
        greedy.append(int(np.argmax(last)))
        last = model.forward([greedy[-1]], start=len(prompt) + len(greedy) - 1, last_only=True)[0]
    return logits, greedy


def greedy_agreement(
    reference: list[int], engine: list[int], margins: list[float], near_tie: float
) -> tuple[int, float | None, bool]:
    """(tokens that agree, the reference's top-two margin where they part or None, whether they
    agree): they agree when they part only where the reference's two best tokens were within
    `near_tie`, a step at which a difference inside the bound may pick the other one."""
    match = first_divergence(reference, engine)
    margin = margins[match] if match < min(len(reference), len(engine)) else None
    return match, margin, margin is None or margin < near_tie


def first_divergence(a: list[int], b: list[int]) -> int:
    """Index of the first differing token; the length when the two agree throughout."""
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


def check_file(
    model_dir: Path | str,
    gguf: Path | str,
    prompts: list[dict],
    corpus_text: str | None = None,
    max_tokens: int = 512,
    greedy_tokens: int = 64,
    near_tie: float = 2e-4,
) -> dict:
    """All metrics of one GGUF file against transformers on the same weights; per prompt and over
    all prompts. A greedy continuation agrees when it matches the reference's up to the end or up
    to a step where the reference's two best tokens are within `near_tie` of each other."""
    from qwen3repro.engine.generate import Generator

    generator = Generator.from_gguf(gguf, n_ctx=max_tokens + greedy_tokens)
    reference = Reference(model_dir, gguf)
    total = Divergence()
    max_abs, sum_abs, n_values = 0.0, 0.0, 0
    per_prompt = []
    for p in progress_bar(
        prompt_tokens(generator, prompts, corpus_text, max_tokens), f"{Path(gguf).stem}: check prompts"
    ):
        tokens = p["tokens"]
        ref_logits, ref_greedy, ref_margins = reference.run(tokens, greedy_tokens)
        logits, greedy = engine_run(generator.model, tokens, greedy_tokens)
        positions = compare(ref_logits[:-1], logits[:-1], np.asarray(tokens[1:]))
        total.add(positions)
        max_abs = max(max_abs, float(positions.max_abs_dlogit.max()))
        sum_abs += float(positions.sum_abs_dlogit.sum())
        n_values += positions.sum_abs_dlogit.size * logits.shape[1]
        match, tie, agrees = greedy_agreement(ref_greedy, greedy, ref_margins, near_tie)
        per_prompt.append(
            {
                "name": p["name"],
                "kind": p["kind"],
                "n_tokens": len(tokens),
                "max_abs_dlogit": float(positions.max_abs_dlogit.max()),
                "kl_mean": float(positions.kld.mean()),
                "top1_agreement": float(positions.same_top.mean()),
                "greedy_match": match,
                "greedy_margin_at_divergence": tie,
                "greedy_agrees": agrees,
                "greedy_reference": generator.tokenizer.decode(ref_greedy),
                "greedy_engine": generator.tokenizer.decode(greedy),
            }
        )
        log.info(
            "%s: %d tokens, max |Δlogit| %.3g, KL %.3g, greedy agrees for %d of %d%s",
            p["name"],
            len(tokens),
            per_prompt[-1]["max_abs_dlogit"],
            per_prompt[-1]["kl_mean"],
            match,
            greedy_tokens,
            "" if tie is None else f" (then the reference's top two are {tie:.3g} apart)",
        )
    s = total.summary()
    return {
        "metrics": _metrics(s, max_abs, sum_abs / n_values, per_prompt, greedy_tokens),
        "divergence": s,
        "prompts": per_prompt,
    }


def differing_tensors(
    model_dir: Path | str,
    gguf: Path | str,
    type_name: str,
    imatrix: Path | str | None = None,
    reencode: bool = False,
) -> tuple[int, list[str]]:
    """(tensors checked, names of those that are not byte for byte what the converter makes of the
    source weights at `type_name`, with the importance matrix `imatrix` if one made the file): a file
    changed after conversion, or made of other weights. By the conversion's record (the digests of
    each tensor as encoded and of its source, in the .json beside the file), or with `reencode`
    (or a file without that record) by encoding every tensor again."""
    from qwen3repro.convert.converter import importance_of, load_imatrix, plan_tensors
    from qwen3repro.convert.hf_weights import SafetensorsSource, architecture_of, read_config
    from qwen3repro.convert.quants import TAKES_IMATRIX
    from qwen3repro.gguf_file import GGUFFile

    model_dir = Path(model_dir)
    source = SafetensorsSource(model_dir)
    arch = architecture_of(read_config(model_dir))
    names, shapes, types, _ = plan_tensors(arch, source, type_name, has_imatrix=imatrix is not None)
    matrix = load_imatrix(imatrix, shapes)[0] if imatrix is not None else None
    record = None if reencode else _conversion_record(gguf)
    if record is None:
        same = lambda n, raw: _encodes_to(source.load(names[n]), types[n], importance_of(matrix, n), raw)  # noqa: E731
    else:
        takes = {n for n in shapes if importance_of(matrix, n) is not None and types[n] in TAKES_IMATRIX}
        same = _recorded(record, source, names, imatrix, takes)
    with GGUFFile(gguf) as f:
        differing = sorted(set(f.tensors) - set(shapes))
        for n, shape in shapes.items():
            info = f.tensors.get(n)
            if info is None or info.type != types[n] or info.shape != shape or not same(n, f.raw(n)):
                differing.append(n)
    return len(shapes), differing


def _encodes_to(data: np.ndarray, qtype, importance, raw: np.ndarray) -> bool:
    from qwen3repro.convert.converter import encode

    encoded = np.ascontiguousarray(encode(data, qtype, threads=1, importance=importance))
    return np.array_equal(encoded.reshape(-1).view(np.uint8), raw)


def _conversion_record(gguf: Path | str) -> dict | None:
    """The converter's manifest beside the file, if it records every tensor's digests."""
    path = Path(gguf).with_suffix(".json")
    try:
        record = json.loads(path.read_text("utf-8"))
        tensors = {t["name"]: t for t in record["tensors"]}
    except (OSError, ValueError, KeyError, TypeError):
        log.warning("%s: no conversion record; every tensor is encoded again to check the file", path)
        return None
    if not all("sha256" in t and "source_sha256" in t for t in tensors.values()):
        log.warning("%s: the conversion record has no tensor digests; every tensor is encoded again", path)
        return None
    return {**record, "tensors": tensors}


def _recorded(record: dict, source, names: dict, imatrix: Path | str | None, takes: set[str]):
    """Whether a tensor is the one the record says the converter wrote, from these source weights,
    with this importance matrix: where another matrix (or none) made the file, a tensor quantized
    with one, or that would be quantized with the one given now (`takes`), differs."""
    from qwen3repro.convert.converter import bytes_sha256
    from qwen3repro.fsutil import sha256_file

    given = sha256_file(imatrix) if imatrix is not None else None
    other_matrix = given != record.get("imatrix", {}).get("sha256")

    def same(n: str, raw: np.ndarray) -> bool:
        entry = record["tensors"].get(n)
        if entry is None or (other_matrix and (entry.get("imatrix") or n in takes)):
            return False
        return bytes_sha256(raw) == entry["sha256"] and bytes_sha256(source.load(names[n])) == entry["source_sha256"]

    return same


def _metrics(s: dict, max_abs: float, mean_abs: float, per_prompt: list[dict], greedy_tokens: int) -> dict:
    """The gate's metrics over all prompts, from the divergence summary and the per-prompt results."""
    return {
        "max_abs_dlogit": max_abs,
        "mean_abs_dlogit": mean_abs,
        "kl_mean": s["kld_mean"],
        "kl_p99": s["kld_p99"],
        "kl_max": s["kld_max"],
        "top1_agreement": s["same_top_p"],
        "same_top_p": s["same_top_p"],
        "same_top_p_error": s["same_top_p_error"],
        "rms_dp": s["rms_dp"],
        "rms_dp_error": s["rms_dp_error"],
        "greedy_match": min(p["greedy_match"] for p in per_prompt),
        "greedy_agreement": float(np.mean([p["greedy_agrees"] for p in per_prompt])),
        "greedy_tokens": greedy_tokens,
        "positions": s["count"],
    }


def gate(metrics: dict, thresholds: dict, label: str, notes: dict[str, str] | None = None) -> list[str]:
    """The metrics outside their thresholds, each as a phrase (with its note, if any); raises a
    one-line UserError if any."""
    broken = []
    for name, limit in thresholds.items():
        if name not in METRICS:
            raise UserError(f"{label}: no metric {name!r} to check (one of {', '.join(METRICS)})")
        value = metrics[name]
        if name == "greedy_match":  # "all of them" when fewer greedy tokens are generated than the bound
            limit = min(limit, metrics["greedy_tokens"])
        worse = value > limit if METRICS[name] == "max" else value < limit
        if worse or (isinstance(value, float) and math.isnan(value)):
            bound = "above the maximum" if METRICS[name] == "max" else "below the minimum"
            note = f" ({notes[name]})" if notes and name in notes else ""
            broken.append(f"{name} {value:.4g} {bound} {limit:g}{note}")
    if broken:
        more = f" (and {len(broken) - 1} more: {'; '.join(broken[1:])})" if len(broken) > 1 else ""
        raise UserError(f"{label}: accuracy check failed: {broken[0]}{more}")
    return broken


def write_check(
    model_dir: Path | str,
    gguf: Path | str,
    corpus: Path | str | None,
    out: Path | str,
    settings: dict,
    model: str,
    file_type: str,
    imatrix: Path | str | None = None,
) -> dict:
    """Run the check of one file (`file_type` as named in the pipeline: Q4_K_M-imat was quantized
    with the importance matrix `imatrix`), log it, gate it; the result is written only when it passes."""
    from qwen3repro.convert.tensor_plan import split_variant

    corpus_text = Path(corpus).read_text("utf-8") if corpus else None
    bound = settings["bound"]
    base_type, with_imatrix = split_variant(file_type)
    if with_imatrix and imatrix is None:
        raise UserError(f"{gguf}: a {file_type} file is checked against the importance matrix that made it; none given")
    n_tensors, differing = differing_tensors(
        model_dir, gguf, base_type, imatrix if with_imatrix else None, settings["reencode"]
    )
    result = check_file(
        model_dir,
        gguf,
        settings["prompts"],
        corpus_text,
        settings["max_tokens"],
        settings["greedy_tokens"],
        near_tie=2 * bound["max_abs_dlogit"],  # within the bound, only a nearer tie can flip an argmax
    )
    result["metrics"].update(tensors_checked=n_tensors, tensors_differing=len(differing))
    result = {
        "model": model,
        "type": file_type,
        "gguf": str(gguf),
        "thresholds": bound,
        **result,
        "differing_tensors": differing,
    }
    log.info("%s %s: %s", model, file_type, json.dumps(result["metrics"]))
    more = f" and {len(differing) - 3} more" if len(differing) > 3 else ""
    gate(result["metrics"], bound, f"{model} {file_type}", {"tensors_differing": ", ".join(differing[:3]) + more})
    write_json_atomic(out, result)
    return result


def write_check_table(parts: list[str], out: Path | str) -> str:
    """One model's check results, a row per file type."""
    rows = []
    for part in parts:
        r = json.loads(Path(part).read_text("utf-8"))
        rows.append({"model": r["model"], "type": r["type"], **r["metrics"]})
    return write_table(rows, out)
