"""The sampling sweep: every cell of the grid on every prompt and seed on one GGUF file, measured.

Every cell runs every prompt with every seed (grids over multi_turn run the conversations
instead), records the text, tokens and per-step statistics of the distribution, and the same
command twice gives the same rows but for the timings.
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from qwen3repro.engine.batch import Job, run_jobs
from qwen3repro.engine.generate import Request
from qwen3repro.engine.sampler import PRESETS, observers
from qwen3repro.fsutil import staged_file, write_text_atomic
from qwen3repro.pipeline.progress import progress_bar
from qwen3repro.sweep.grid import SAMPLING_AXES, check_settings, plan, trace_plan
from qwen3repro.sweep.statistics import StepStats, distinct_n, repeated_ngram_rate, think_tokens
from qwen3repro.sweep.traces import TAIL_EDGES, TraceRecorder, check_traces

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"


class Runner:
    """Runs cells on one GGUF file, as many generations at once as sweep.lanes (one: one at a time)."""

    def __init__(self, gguf: Path | str, settings: dict, lanes: int = 1, share_prompts: bool = True):
        from qwen3repro.engine.generate import Generator
        from qwen3repro.engine.prompt_store import PromptStore

        self.settings = settings
        self.max_new_tokens = settings["max_new_tokens"]
        n_ctx = settings["n_ctx"]
        # batched, a single-turn prompt is prefilled once and copied to every later generation of
        # it (bitwise the same; its rows count it as reused); one at a time, each is prefilled
        store = PromptStore() if lanes > 1 and share_prompts else None
        self.generator = Generator.from_gguf(gguf, n_ctx=n_ctx, lanes=lanes, prompt_store=store)
        vocab = self.generator.tokenizer.vocab
        self.think_open, self.think_close = vocab.get(THINK_OPEN), vocab.get(THINK_CLOSE)

    def request(
        self, messages: list[dict], cell: dict, seed: int, fresh: bool = True, observe=None, forced=None, share=False
    ):
        """The prompt, the request and the statistics collector of one generation of a cell; `observe`
        (a sampler observer) also sees every step; `forced` tokens replace the draws; `share` takes
        the prompt from the prompt store where it is there. Every single-turn run starts from an
        empty cache (fresh), so that timings compare."""
        g = self.generator
        prompt = g.chat_prompt(messages, thinking=cell["thinking"])
        stats = StepStats()
        request = Request(
            prompt,
            replace(cell["params"], seed=seed),
            self.max_new_tokens,
            observe=observers(stats, observe),
            banned=g.thinking_ban(cell["thinking"]),
            forced=forced,
            fresh=fresh,
            share=share,
        )
        return prompt, request, stats

    def generate(self, messages: list[dict], cell: dict, seed: int, fresh: bool = True, observe=None, forced=None):
        """One generation of a cell on its own (lane 0): (prompt, result, statistics)."""
        prompt, request, stats = self.request(messages, cell, seed, fresh, observe, forced)
        return prompt, self.generator.run(request), stats

    def conversation(self, conv: dict, cell: dict, seed: int) -> tuple[list[dict], list[dict]]:
        """One conversation of a multi-turn cell on its own: (rows, generations)."""
        out: list = []
        run_jobs(self.generator, [self.conversation_job(conv, cell, seed, out)])
        return [row for row, _ in out], [generation for _, generation in out]

    def trace(
        self, messages: list[dict], preset_name: str, thinking: bool, seed: int, top: int, observe=None, forced=None
    ) -> dict:
        """One showcase generation at a Qwen3 preset, every step recorded for the report's explorer;
        with `forced`, this model's distributions along another file's tokens."""
        cell = {"params": PRESETS[preset_name], "thinking": thinking}
        recorder = TraceRecorder(top)
        _, result, _ = self.generate(messages, cell, seed, observe=observers(recorder, observe), forced=forced)
        decode = self.generator.tokenizer.decode
        seen = sorted({i for step in recorder.steps for i in step["ids"]} | set(result.tokens))
        return {
            "preset": preset_name,
            "thinking": thinking,
            "params": PRESETS[preset_name].as_dict(),
            "seed": seed,
            "text": result.text,
            "tokens": result.tokens,
            "pieces": {str(i): decode([i]) for i in seen},
            "steps": recorder.steps,
        }

    def row(
        self, cell: dict, name: str, seed: int, prompt: list[int], result, stats: StepStats, turn: int | None = None
    ) -> dict:
        tokens = result.tokens
        return {
            "grid": cell["grid"],
            "cell": cell["cell"],
            "preset": cell["preset"],
            **{k: getattr(cell["params"], k) for k in SAMPLING_AXES},
            "thinking": cell["thinking"],
            "multi_turn": cell["multi_turn"],
            "prompt": name,
            "turn": turn,
            "seed": seed,
            "context_tokens": len(prompt),
            "reused_tokens": result.reused_tokens,
            "n_tokens": len(tokens),
            "stop_reason": result.stop_reason,
            "think_tokens": think_tokens(tokens, self.think_open, self.think_close),
            "think_closed": self.think_close is not None and self.think_close in tokens,
            "distinct_1": distinct_n(tokens, 1),
            "distinct_2": distinct_n(tokens, 2),
            "repeated_4gram_rate": repeated_ngram_rate(tokens, 4),
            **stats.summary(),
            "prefill_s": result.prefill_s,
            "ttft_s": result.ttft_s,
            "decode_s": result.decode_s,
            "decode_tokens_per_s": result.decode_tokens_per_s,
        }

    # ------------------------------------------------------------------ jobs (engine/batch.py)
    def prompt_job(self, p: dict, cell: dict, seed: int, out: list) -> Job:
        """One prompt of a single-turn cell: its row and generation go to `out`."""
        prompt, request, stats = self.request(p["messages"], cell, seed, share=True)
        result = yield request
        row = self.row(cell, p["name"], seed, prompt, result, stats)
        out.append((row, {**_generation(row, result), "messages": p["messages"]}))

    def conversation_job(self, conv: dict, cell: dict, seed: int, out: list) -> Job:
        """Play the user turns in order. Multi-turn on: the history (with the model's own answers
        where the script has none) is kept and the lane's cache reused; then every turn's prompt is
        prefilled again from an empty cache, the time without reuse. Off: each turn on its own."""
        system = [m for m in conv["messages"][:1] if m["role"] == "system"]
        history: list[dict] = []
        prompts = []
        messages = conv["messages"]
        for i, m in enumerate(messages):
            if m["role"] != "user":
                history.append(m)
                continue
            turn_messages = history + [m] if cell["multi_turn"] else system + [m]
            fresh = not cell["multi_turn"] or not prompts
            prompt, request, stats = self.request(turn_messages, cell, seed, fresh=fresh)
            result = yield request
            row = self.row(cell, conv["name"], seed, prompt, result, stats, turn=len(prompts))
            prompts.append(prompt)
            out.append((row, {**_generation(row, result), "messages": turn_messages}))
            history.append(m)
            if i + 1 == len(messages) or messages[i + 1]["role"] != "assistant":
                history.append({"role": "assistant", "content": result.text})
        if cell["multi_turn"]:
            for (row, _), prompt in zip(out, prompts):
                # time to the first token when nothing is cached, sampled as in the run it is compared with
                once = Request(
                    prompt,
                    replace(cell["params"], seed=seed),
                    1,
                    banned=self.generator.thinking_ban(cell["thinking"]),
                    fresh=True,
                )
                row["ttft_full_prefill_s"] = (yield once).ttft_s


def _generation(row: dict, result) -> dict:
    return {k: row[k] for k in ("cell", "prompt", "turn", "seed")} | {
        "tokens": result.tokens,
        "text": result.text,
        "stop_reason": result.stop_reason,
    }


def run_sweep(
    gguf: Path | str, settings: dict, lanes: int | None = None, share_prompts: bool = True
) -> tuple[list[dict], list[dict]]:
    """(rows, generations) for every cell, prompt and seed on one file, in the grid's order; `lanes`
    (default sweep.lanes) generations run at once, and one lane runs them one at a time."""
    check_settings(settings)
    runner = Runner(gguf, settings, lanes=lanes or settings["lanes"], share_prompts=share_prompts)
    outputs, jobs = [], []
    for cell, seed, item in plan(settings):
        outputs.append([])
        job = runner.prompt_job if cell["multi_turn"] is None else runner.conversation_job
        jobs.append(job(item, cell, seed, outputs[-1]))
    run_jobs(runner.generator, progress_bar(jobs, f"{Path(gguf).stem}: sweep generations", total=len(jobs)))
    pairs = [pair for out in outputs for pair in out]
    return [row for row, _ in pairs], [generation for _, generation in pairs]


def run_traces(gguf: Path | str, settings: dict, along: dict | None = None) -> list[dict]:
    """The showcase generations of sweep.traces on one file, every step recorded. With `along` (the
    reference file type's traces file), each is recorded a second time on the reference's tokens,
    so the report can set the two files' distributions side by side on one context."""
    runner = Runner(gguf, settings)
    t = settings["traces"]
    reference = {(r["prompt"], r["preset"], r["thinking"]): r["tokens"] for r in (along or {}).get("traces", [])}
    traces = []
    for p, preset_name, thinking in trace_plan(settings):
        args = (p["messages"], preset_name, thinking, t["seed"], t["top"])
        traces.append({"prompt": p["name"], **runner.trace(*args)})
        forced = reference.get((p["name"], preset_name, thinking))
        if forced:
            traces.append({"prompt": p["name"], "along": along["type"], **runner.trace(*args, forced=forced)})
    return traces


def write_traces(
    gguf: Path | str, settings: dict, out: Path | str, model: str, file_type: str, along: Path | str | None = None
) -> list[dict]:
    """The traces of one file type as results/sweep/<model>/<type>-traces.json."""
    reference = None
    if along is not None:
        data = json.loads(Path(along).read_text("utf-8"))
        reference = {"type": data.get("type"), "traces": check_traces(data, along)}
    traces = run_traces(gguf, settings, reference)
    document = {"model": model, "type": file_type, "tail_edges": TAIL_EDGES.tolist(), "traces": traces}
    write_text_atomic(Path(out), json.dumps(document) + "\n", force=True)
    return traces


TIMING_COLUMNS = ["prefill_s", "ttft_s", "decode_s", "decode_tokens_per_s", "ttft_full_prefill_s"]
# what depends on how the generations ran, not on what they are: timings, and (batched) a prompt's
# keys and values copied from the prompt store
RUN_COLUMNS = TIMING_COLUMNS + ["reused_tokens"]


def write_sweep(
    gguf: Path | str,
    settings: dict,
    out_table: Path | str,
    out_generations: Path | str,
    model: str,
    file_type: str,
) -> pd.DataFrame:
    import pandas as pd

    rows, generations = run_sweep(gguf, settings)
    frame = pd.DataFrame(rows)
    frame.insert(0, "type", file_type)
    frame.insert(0, "model", model)
    with staged_file(out_table, force=True) as tmp:
        frame.to_parquet(tmp, index=False)
    write_text_atomic(
        Path(out_generations),
        "".join(json.dumps({"model": model, "type": file_type, **g}, ensure_ascii=False) + "\n" for g in generations),
        force=True,
    )
    return frame


def summary_table(frame) -> str:
    """Mean of the main statistics per cell, for logs and terminals."""
    columns = [
        "n_tokens",
        "think_tokens",
        "think_closed",
        "distinct_2",
        "repeated_4gram_rate",
        "mean_entropy",
        "mean_chosen_prob",
        "mean_after_top_p",
        "ttft_s",
    ]
    return frame.groupby("cell", sort=False)[columns].mean().round(3).to_string()
