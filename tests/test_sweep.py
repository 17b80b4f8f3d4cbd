"""The sampling sweep: the grid, its statistics, thinking off, multi-turn reuse, reproducibility."""

import numpy as np
import pytest

from qwen3repro.config import validate_config
from qwen3repro.errors import UserError
from qwen3repro.sweep.grid import cells
from qwen3repro.sweep.runner import Runner, run_sweep, run_traces
from qwen3repro.sweep.statistics import distinct_n, repeated_ngram_rate, think_tokens

BASE = {"models": {"m": {"source": "synthetic", "preset": "qwen3-tiny"}}}
PROMPT = {"name": "hi", "messages": [{"role": "user", "content": "Say something."}]}
CONVERSATION = {
    "name": "two",
    "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hello!"},
        {"role": "user", "content": "And again?"},
    ],
}


def small_settings(**overrides):
    settings = validate_config(dict(BASE))["sweep"]
    settings.update(
        prompts=[PROMPT],
        conversations=[CONVERSATION],
        seeds=[0],
        max_new_tokens=6,
        n_ctx=256,
        grids=[
            {"name": "t", "preset": "thinking", "axes": {"temperature": [0.0, 1.0]}},
            {"name": "mt", "preset": "non-thinking", "axes": {"multi_turn": [False, True]}},
        ],
        traces={"prompts": ["hi"], "presets": ["thinking"], "thinking": [True, False], "top": 5, "seed": 0},
    )
    settings.update(overrides)
    return settings


def test_grids_take_the_product_of_their_axes_over_each_preset():
    grid = cells(
        {
            "grids": [
                {
                    "name": "g",
                    "preset": ["thinking", "non-thinking"],
                    "axes": {"temperature": [0.3, 1.0], "top_p": [0.5, 0.9, 1.0]},
                }
            ]
        }
    )
    assert len(grid) == 12
    assert grid[0]["cell"] == "g: preset=thinking, temperature=0.3, top_p=0.5"
    assert grid[0]["params"].top_k == 20 and grid[0]["thinking"] is True  # the rest from the preset
    assert grid[-1]["preset"] == "non-thinking" and grid[-1]["thinking"] is False


def test_default_grid_has_qwen3s_presets_and_every_lever():
    settings = validate_config(dict(BASE))["sweep"]
    grid = cells(settings)
    presets = {(c["preset"], c["params"].temperature, c["params"].top_p, c["params"].top_k) for c in grid}
    assert ("thinking", 0.6, 0.95, 20) in presets and ("non-thinking", 0.7, 0.8, 20) in presets
    varied = {k for g in settings["grids"] for k in g["axes"]}
    assert varied == {"temperature", "top_p", "top_k", "min_p", "presence_penalty", "thinking", "multi_turn"}


@pytest.mark.parametrize(
    "sweep, message",
    [
        ({"grids": []}, "^config: sweep: the grid is empty"),
        (
            {"grids": [{"name": "hot", "preset": "thinking", "axes": {"top_p": [0.9, 1.5]}}]},
            r"^config: sweep cell 'hot: preset=thinking, top_p=1.5': top-p must be in \(0, 1\], not 1.5$",
        ),
        (
            {"grids": [{"name": "cold", "preset": "thinking", "axes": {"temperature": [-1]}}]},
            "^config: sweep cell 'cold: preset=thinking, temperature=-1': temperature must be >= 0",
        ),
        (
            {"grids": [{"name": "e", "preset": "thinking", "axes": {"min_p": []}}]},
            "sweep grid 'e': axis min_p has no values",
        ),
        (
            {
                "conversations": [
                    {"name": "c", "messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}
                ]
            },
            "^config: sweep conversation 'c': its last message is from the assistant; it must end with a user turn$",
        ),
        ({"traces": {"prompts": ["nowhere"]}}, "^config: sweep.traces: no prompt named 'nowhere' in sweep.prompts$"),
    ],
)
def test_bad_sweeps_are_one_line_errors_naming_the_cell(sweep, message):
    with pytest.raises(UserError, match=message):
        validate_config({**BASE, "sweep": sweep})


def test_text_statistics():
    assert distinct_n([1, 2, 3, 4], 1) == 1.0 and distinct_n([1, 1, 1, 1], 1) == 0.25
    assert distinct_n([1, 2, 1, 2, 1], 2) == 0.5  # (1,2) (2,1) (1,2) (2,1)
    assert repeated_ngram_rate([1, 2, 3, 4, 1, 2, 3, 4], 4) == 0.2  # 5 four-grams, the last repeats the first
    assert repeated_ngram_rate([1, 2, 3, 4, 5], 4) == 0.0
    assert think_tokens([9, 100, 5, 6, 101, 7], 100, 101) == 2  # 5 and 6
    assert think_tokens([100, 5, 6], 100, 101) == 2  # never closed: to the end


@pytest.fixture(scope="module")
def runner(tiny_f32):
    return Runner(tiny_f32, small_settings())


def prefer_think(runner, monkeypatch):
    """A model that wants to open <think> whenever the previous token is not <think>."""
    model, think = runner.generator.model, runner.think_open
    forward = model.forward

    def biased(tokens, start=0, last_only=False, **kw):
        logits = forward(tokens, start=start, last_only=last_only, **kw)
        if last_only and np.asarray(tokens).reshape(-1)[-1] != think:
            logits[:, think] += 100.0
        return logits

    monkeypatch.setattr(model, "forward", biased)


def test_thinking_off_yields_no_tokens_inside_think(runner, monkeypatch):
    prefer_think(runner, monkeypatch)
    on, off = (
        next(c for c in cells({"grids": [{"name": "p", "preset": "thinking", "axes": {"thinking": [v]}}]}))
        for v in (True, False)
    )
    _, result, stats = runner.generate(PROMPT["messages"], on, seed=0)
    assert runner.row(on, "hi", 0, [], result, stats)["think_tokens"] > 0  # the model does think when allowed
    _, result, stats = runner.generate(PROMPT["messages"], off, seed=0)
    assert runner.think_open not in result.tokens
    assert runner.row(off, "hi", 0, [], result, stats)["think_tokens"] == 0


def test_multi_turn_on_reuses_the_prefix_and_off_answers_each_turn_alone(runner):
    grid = cells(small_settings())
    off, on = [c for c in grid if c["multi_turn"] is not None]
    rows_on, _ = runner.conversation(CONVERSATION, on, seed=0)
    rows_off, _ = runner.conversation(CONVERSATION, off, seed=0)
    assert [r["turn"] for r in rows_on] == [0, 1]
    assert rows_on[1]["context_tokens"] > rows_on[0]["context_tokens"] + rows_on[0]["n_tokens"] - 1
    # all of the first prompt is reused but its empty think block (<think> \n\n </think> \n\n), which
    # Qwen3's template leaves out of earlier assistant turns
    assert rows_on[1]["reused_tokens"] == rows_on[0]["context_tokens"] - 4
    assert all(r["ttft_full_prefill_s"] > 0 for r in rows_on)
    assert rows_off[1]["context_tokens"] < rows_on[1]["context_tokens"] and rows_off[1]["reused_tokens"] == 0


def test_same_command_twice_gives_identical_non_timing_results_and_traces(tiny_f32):
    import pandas as pd

    from qwen3repro.sweep.runner import TIMING_COLUMNS

    first, generations = run_sweep(tiny_f32, small_settings())
    second, _ = run_sweep(tiny_f32, small_settings())
    traces, traces2 = run_traces(tiny_f32, small_settings()), run_traces(tiny_f32, small_settings())
    a = pd.DataFrame(first).drop(columns=TIMING_COLUMNS, errors="ignore")
    b = pd.DataFrame(second).drop(columns=TIMING_COLUMNS, errors="ignore")
    pd.testing.assert_frame_equal(a, b)
    assert len(first) == 2 + 2 * 2 == len(generations)  # 2 single-turn cells, 2 multi-turn cells x 2 turns
    greedy = first[0]
    assert greedy["temperature"] == 0.0 and greedy["mean_entropy"] == 0.0 and greedy["mean_after_top_p"] == 1.0
    assert traces == traces2
    assert [(t["preset"], t["thinking"]) for t in traces] == [("thinking", True), ("thinking", False)]
    step = traces[0]["steps"][0]
    assert len(step["ids"]) == 5 and step["gaps"][0] == 0 and step["gaps"] == sorted(step["gaps"])
    assert 1 <= step["kept"] <= 20 and str(step["token"]) in traces[0]["pieces"]
    assert 5 + sum(step["tail"]["counts"]) + step["banned"] == 151_936


def test_a_trace_along_another_files_tokens_takes_those_tokens_and_along_its_own_equals_its_own(tiny_f32):
    settings = small_settings()
    free = run_traces(tiny_f32, settings)
    along_itself = run_traces(tiny_f32, settings, along={"type": "F32", "traces": free})
    assert [t.get("along") for t in along_itself] == [None, "F32", None, "F32"]
    for plain, forced in zip(along_itself[0::2], along_itself[1::2]):
        assert forced["tokens"] == plain["tokens"] and forced["steps"] == plain["steps"]
    other = [{**t, "tokens": t["tokens"][:2][::-1]} for t in free]  # another text: the first two tokens swapped
    forced = run_traces(tiny_f32, settings, along={"type": "X", "traces": other})[1]
    assert forced["tokens"] == other[0]["tokens"] and [s["token"] for s in forced["steps"]] == other[0]["tokens"]


def test_a_trace_step_gives_every_stored_probability_within_its_stated_bound_at_any_temperature(tiny_f32):
    """The top logits and the histogram of the rest against the full softmax: the page's error
    bound holds, and is under 1e-4, from temperature 0.05 to 2."""
    from qwen3repro.engine.logprobs import softmax
    from qwen3repro.sweep.traces import probabilities, record_step

    runner = Runner(tiny_f32, small_settings())
    logits = []
    runner.trace(PROMPT["messages"], "thinking", True, 0, 64, observe=lambda _t, z, _d: logits.append(z.copy()))
    rng = np.random.default_rng(0)
    # the model's own steps, and harder ones: a peaked and a flat distribution over the real vocabulary
    cases = logits + [rng.normal(0, 4, 151_936), rng.normal(0, 0.3, 151_936)]
    for z in cases:
        step = record_step(0, z, 64, 1)
        for temperature in (0.05, 0.1, 0.3, 0.6, 1.0, 1.5, 2.0):
            p, bound = probabilities(step, temperature)
            exact = softmax(np.asarray(z, np.float64) / temperature)[step["ids"]]
            assert bound <= 1e-4 and np.all(np.abs(p - exact) <= bound * exact + 1e-15), (temperature, bound)


def test_another_seed_gives_other_tokens(tiny_f32):
    rows_a, gens_a = run_sweep(tiny_f32, small_settings(grids=[{"name": "t", "preset": "thinking"}], traces={}))
    rows_b, gens_b = run_sweep(
        tiny_f32, small_settings(grids=[{"name": "t", "preset": "thinking"}], traces={}, seeds=[1])
    )
    assert gens_a[0]["tokens"] != gens_b[0]["tokens"]
