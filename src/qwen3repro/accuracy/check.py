"""The accuracy gate: the engine on one GGUF file against transformers on the Hugging Face weights.

Both run teacher-forced over the same tokens of a prompt set (chat-formatted and plain text,
several languages, a long corpus excerpt), transformers as Qwen3ForCausalLM in float32 with eager
attention, the reference implementation. Every position that has a next token is compared:
|Δlogit|, KL(transformers || engine), argmax agreement and llama.cpp's Δp of the actual next
token. Then each model continues every prompt greedily and the first position where the two
continuations part is recorded. Thresholds per file type decide pass or fail.
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
from qwen3repro.progress import progress_bar

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
) -> dict:
    """All metrics of one GGUF file against transformers; per prompt and over all prompts."""
    from qwen3repro.engine.generate import Generator

    generator = Generator.from_gguf(gguf, n_ctx=max_tokens + greedy_tokens)
    reference = Reference(model_dir)
    total = Divergence()
    max_abs, sum_abs, n_values = 0.0, 0.0, 0
    per_prompt = []
    for p in progress_bar(prompt_tokens(generator, prompts, corpus_text, max_tokens), "check prompts"):
        tokens = p["tokens"]
        ref_logits, ref_greedy = reference.run(tokens, greedy_tokens)
        logits, greedy = engine_run(generator.model, tokens, greedy_tokens)
        positions = compare(ref_logits[:-1], logits[:-1], np.asarray(tokens[1:]))
        total.add(positions)
        max_abs = max(max_abs, float(positions.max_abs_dlogit.max()))
        sum_abs += float(positions.sum_abs_dlogit.sum())
        n_values += positions.sum_abs_dlogit.size * logits.shape[1]
        match = first_divergence(ref_greedy, greedy)
        per_prompt.append(
            {
                "name": p["name"],
                "kind": p["kind"],
                "n_tokens": len(tokens),
                "max_abs_dlogit": float(positions.max_abs_dlogit.max()),
                "kl_mean": float(positions.kld.mean()),
                "top1_agreement": float(positions.same_top.mean()),
                "greedy_match": match,
                "greedy_reference": generator.tokenizer.decode(ref_greedy),
                "greedy_engine": generator.tokenizer.decode(greedy),
            }
        )
        log.info(
            "%s: %d tokens, max |Δlogit| %.3g, KL %.3g, greedy agrees for %d of %d",
            p["name"],
            len(tokens),
            per_prompt[-1]["max_abs_dlogit"],
            per_prompt[-1]["kl_mean"],
            match,
            greedy_tokens,
        )
    s = total.summary()
    return {
        "metrics": _metrics(s, max_abs, sum_abs / n_values, per_prompt, greedy_tokens),
        "divergence": s,
        "prompts": per_prompt,
    }


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
        "greedy_tokens": greedy_tokens,
        "positions": s["count"],
    }


def gate(metrics: dict, thresholds: dict, label: str) -> list[str]:
    """The metrics outside their thresholds, each as a phrase; raises a one-line UserError if any."""
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
            broken.append(f"{name} {value:.4g} {bound} {limit:g}")
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
) -> dict:
    """Run the check of one file, log it, gate it; the result is written only when it passes."""
    corpus_text = Path(corpus).read_text("utf-8") if corpus else None
    result = check_file(
        model_dir, gguf, settings["prompts"], corpus_text, settings["max_tokens"], settings["greedy_tokens"]
    )
    thresholds = settings.get("thresholds", {}).get(file_type, {})
    result = {"model": model, "type": file_type, "gguf": str(gguf), "thresholds": thresholds, **result}
    log.info("%s %s: %s", model, file_type, json.dumps(result["metrics"]))
    gate(result["metrics"], thresholds, f"{model} {file_type}")
    write_json_atomic(out, result)
    return result


def write_check_table(parts: list[str], out: Path | str) -> str:
    """One model's check results, a row per file type."""
    rows = []
    for part in parts:
        r = json.loads(Path(part).read_text("utf-8"))
        rows.append({"model": r["model"], "type": r["type"], **r["metrics"]})
    return write_table(rows, out)
