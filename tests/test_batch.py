"""Generations in a batch equal the same generations alone; prompt lookup changes passes, not tokens."""

import numpy as np
import pytest

from qwen3repro.engine import generate as generate_module
from qwen3repro.engine.batch import generate_all
from qwen3repro.engine.generate import Generator, Request
from qwen3repro.engine.lookup import propose
from qwen3repro.engine.prompt_store import PromptStore
from qwen3repro.engine.qwen3 import rows_times_transposed
from qwen3repro.engine.sampler import PRESETS, SamplingParams

SETTINGS = [
    PRESETS["greedy"],
    PRESETS["thinking"],
    SamplingParams(temperature=1.5, top_k=0, top_p=1.0, seed=3),  # flat: a rounding would move its draws
    SamplingParams(temperature=0.8, top_k=40, top_p=0.9, min_p=0.05, repetition_penalty=1.3, seed=4),
    SamplingParams(temperature=1.0, top_k=0, top_p=0.95, presence_penalty=1.5, seed=5),
]
PROMPTS = ["Once upon a time", "def f(x):\n    return", "The capital of France is", "1, 2, 3, 4,", "你好"]


@pytest.fixture(scope="module")
def alone(tiny_f32) -> Generator:
    return Generator.from_gguf(tiny_f32, n_ctx=256)


def requests(generator: Generator, log: list | None = None) -> list[Request]:
    """Seven generations of different prompts, settings and lengths; `log` collects each one's logits."""

    def recorder(i):
        return None if log is None else (lambda token, logits, dist: log[i].append(np.array(logits)))

    cases = [(PROMPTS[i % 5], SETTINGS[(2 * i) % 5], 12 + 5 * i) for i in range(7)]
    return [
        Request(generator.tokenizer.encode(p), params, n, observe=recorder(i), fresh=True)
        for i, (p, params, n) in enumerate(cases)
    ]


def test_rows_times_transposed_is_bitwise_each_rows_own_product():
    rng = np.random.default_rng(0)
    for n_rows, k, n in [(2, 64, 151_936), (5, 1024, 3072), (16, 3072, 1000), (3, 100, 37)]:
        x = rng.standard_normal((n_rows, k), dtype=np.float32)
        w = rng.standard_normal((n, k), dtype=np.float32)
        got = rows_times_transposed(x, w)
        assert np.array_equal(got, np.concatenate([x[b : b + 1] @ w.T for b in range(n_rows)]))
    w_view = rng.standard_normal((64, 40), dtype=np.float32)[:, :32]  # not contiguous: the plain path
    assert np.array_equal(
        rows_times_transposed(x[:, :32], w_view), np.concatenate([x[b : b + 1, :32] @ w_view.T for b in range(3)])
    )


def test_sequences_in_a_batch_get_bitwise_the_logits_and_tokens_they_get_alone(alone, tiny_f32):
    alone_logits, batch_logits = [[] for _ in range(7)], [[] for _ in range(7)]
    one_by_one = [alone.run(r) for r in requests(alone, alone_logits)]
    batched = Generator.from_gguf(tiny_f32, n_ctx=256, lanes=3)  # fewer lanes than requests: lanes are reused
    together = generate_all(batched, requests(batched, batch_logits))
    assert [r.tokens for r in together] == [r.tokens for r in one_by_one]
    assert [r.stop_reason for r in together] == [r.stop_reason for r in one_by_one]
    for a, b in zip(alone_logits, batch_logits):
        assert len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))
    assert len({tuple(r.tokens) for r in together}) == 7


def test_a_batched_sweep_gives_the_rows_of_one_at_a_time_but_for_timings(tiny_f32):
    import pandas as pd
    from test_sweep import small_settings

    from qwen3repro.sweep.runner import RUN_COLUMNS, run_sweep

    settings = small_settings()
    settings["seeds"] = [0, 1, 2]
    one, generations_one = run_sweep(tiny_f32, settings, lanes=1)
    many, generations_many = run_sweep(tiny_f32, settings, lanes=4)
    a, b = pd.DataFrame(one), pd.DataFrame(many)
    pd.testing.assert_frame_equal(a.drop(columns=RUN_COLUMNS), b.drop(columns=RUN_COLUMNS), check_exact=True)
    assert generations_one == generations_many
    turns = a["turn"].notna()
    assert (a["reused_tokens"][turns] > 0).any()  # multi-turn reused its lane's cache, in the batch too
    assert a["reused_tokens"][turns].equals(b["reused_tokens"][turns])
    # one at a time every single-turn prompt is prefilled; batched, each distinct prompt once, and
    # every later generation of it copies the stored keys and values
    single = b[~turns]
    assert (a["reused_tokens"][~turns] == 0).all()
    copied = single["reused_tokens"] == single["context_tokens"]
    assert (~copied).sum() == single.groupby(["prompt", "thinking"]).ngroups and copied.sum() > 0


def test_a_prompt_from_the_store_is_bitwise_its_own_prefill_and_the_store_keeps_to_its_size(tiny_f32):
    g = Generator.from_gguf(tiny_f32, n_ctx=256, lanes=3, prompt_store=PromptStore())
    prompt = g.tokenizer.encode(PROMPTS[0] + " there was a kingdom by the sea")
    prefilled, reused = g.prefill(prompt, lane=0, share=True)
    copied, copied_reused = g.prefill(prompt, lane=1, share=True)
    assert (reused, copied_reused) == (0, len(prompt))
    assert np.array_equal(prefilled, copied)
    for a, b in zip(g.model.cache(0, len(prompt)), g.model.cache(1, len(prompt))):
        assert np.array_equal(a, b)
    # a lane that holds the prompt's start reuses its own cache, as it does without a store
    g.prefill(prompt[:5], lane=2)
    assert g.prefill(prompt, lane=2, share=True)[1] == 5
    # past its size the store lets the least recently used prompt go
    entry = sum(a.nbytes for a in g.prompt_store.get(prompt))
    g.prompt_store.max_bytes = entry + 1
    other = g.tokenizer.encode(PROMPTS[1])
    g.prefill(other, lane=0, share=True)
    assert g.prompt_store.get(prompt) is None and g.prompt_store.get(other) is not None


def test_propose_takes_what_followed_the_latest_longest_match():
    assert propose([5, 6, 7, 8, 1, 5, 6, 7, 9, 5, 6, 7], 2) == [9, 5]  # 3-gram 5 6 7: latest match
    assert propose([1, 2, 3, 4, 9, 3, 4], 5) == [9, 3, 4]  # as far as the context goes
    assert propose([1, 2, 3, 2], 3) == [3, 2]  # 1-gram when nothing longer matches
    assert propose([1, 2, 3], 4) == [] and propose([7], 3) == [] and propose([1, 1], 0) == []


def prompt_that_repeats(generator: Generator) -> list[int]:
    text = "def area(width, height):\n    return width * height\n\n" * 3 + "def area(width, height):\n"
    return generator.tokenizer.encode(text)


@pytest.mark.parametrize("settings", [0, 1, 2], ids=["greedy", "thinking", "flat"])
def test_prompt_lookup_gives_the_tokens_of_plain_decoding_in_fewer_passes(alone, settings, monkeypatch):
    """Drafts from the context as they come, then drafts that are right for two tokens and wrong
    after: either way the output is plain decoding's, and the passes are counted as they ran."""
    params, prompt = SETTINGS[settings], prompt_that_repeats(alone)
    alone.cached = []
    plain = alone.generate(prompt, params, 40)
    alone.cached = []
    looked_up = alone.generate(prompt, params, 40, lookup=4)
    assert looked_up.tokens == plain.tokens and looked_up.stop_reason == plain.stop_reason

    def half_right(tokens, k):  # the plain run's next two tokens, then two it did not take
        ahead = plain.tokens[len(tokens) - len(prompt) :][:2]
        return ahead + [(t + 1) % 151_936 for t in plain.tokens[len(tokens) - len(prompt) + 2 :][: k - 2]]

    monkeypatch.setattr(generate_module, "propose", half_right)
    alone.cached = []
    drafted = alone.generate(prompt, params, 40, lookup=4)
    assert drafted.tokens == plain.tokens and drafted.stop_reason == plain.stop_reason
    assert 0 < drafted.accepted_tokens < drafted.draft_tokens
    # every pass yields the token after the one it ran plus the drafts it confirmed
    assert drafted.forward_passes + drafted.accepted_tokens == len(drafted.tokens) - 1
    assert drafted.forward_passes < plain.forward_passes == len(plain.tokens) - 1 and plain.draft_tokens == 0


def test_prompt_lookup_accepts_a_draft_token_as_often_as_the_model_would_draw_it(alone, tiny_f32, monkeypatch):
    """The accept/reject rule: a proposed token stands with the probability the model gives it, so
    over many seeds the accepted drafts number the sum of those probabilities. The drafts here are
    the model's own most likely next token, so that each has a real chance either way."""
    from qwen3repro.engine.qwen3 import Qwen3

    reference = Qwen3(tiny_f32, n_ctx=256)
    proposals = []

    def most_likely_next(tokens, k):
        draft = [int(np.argmax(reference.forward(tokens, start=0, last_only=True)[0]))]
        proposals[-1].append((len(tokens), draft))
        return draft

    monkeypatch.setattr(generate_module, "propose", most_likely_next)
    prompt = alone.tokenizer.encode("The capital of France is")
    accepted, expected, variance = 0, 0.0, 0.0
    for seed in range(40):
        proposals.append([])
        steps = []
        alone.cached = []
        # the CI model's logits are close together: at 0.05 its first choice gets about half the mass
        params = SamplingParams(temperature=0.05, top_k=0, top_p=1.0, seed=seed)
        result = alone.generate(prompt, params, 12, lookup=1, observe=lambda token, logits, dist: steps.append(dist))
        produced = list(prompt) + result.tokens
        for at, draft in proposals[-1]:  # a draft made when the context was `at` tokens long
            for j, token in enumerate(draft):
                step = at - len(prompt) + j  # the draw that is compared with this draft token
                if step >= len(result.tokens):
                    break
                dist = steps[step]
                p = float(dist.probs[dist.ids == token].sum())
                expected, variance = expected + p, variance + p * (1 - p)
                if produced[at + j] != token:
                    break
                accepted += 1
    print(
        f"drafts accepted: {accepted}; expected from the model's probabilities: {expected:.1f}"
        f" ± {np.sqrt(variance):.1f}"
    )
    assert expected > 20 and variance > 5  # enough drafts with real chances to tell a wrong rule apart
    assert abs(accepted - expected) < 4 * np.sqrt(variance), (accepted, expected, variance)
