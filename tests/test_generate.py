"""Chat template rendering, generation with prefix reuse, and the chat / generate / tokenize commands."""

import json

import numpy as np
import pytest
from helpers import assert_one_line_error, run_cli

from qwen3repro.engine.chat_template import render
from qwen3repro.engine.generate import Generator
from qwen3repro.engine.sampler import PRESETS, SamplingParams
from qwen3repro.errors import UserError

CONVERSATIONS = [
    [{"role": "user", "content": "Hi"}],
    [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "What is 2+2?"}],
    [
        {"role": "system", "content": "Be kind."},
        {"role": "user", "content": "Hello"},
        {"role": "assistant", "content": "<think>\nThe user greets.\n</think>\n\nHello! 你好"},
        {"role": "user", "content": "Tell me more"},
    ],
]


@pytest.fixture(scope="module")
def generator(tiny_f32) -> Generator:
    return Generator.from_gguf(tiny_f32, n_ctx=512)


@pytest.fixture(scope="module")
def hf_tokenizer(tiny_model):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model)


@pytest.mark.parametrize("thinking", [True, False])
@pytest.mark.parametrize("conversation", range(len(CONVERSATIONS)))
def test_gguf_template_renders_as_transformers_apply_chat_template(generator, hf_tokenizer, conversation, thinking):
    messages = CONVERSATIONS[conversation]
    expected = hf_tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=True, enable_thinking=thinking
    )
    assert generator.tokenizer.decode(generator.chat_prompt(messages, thinking=thinking)) == expected
    assert (
        generator.chat_prompt(messages, thinking=thinking)
        == hf_tokenizer(expected, add_special_tokens=False)["input_ids"]
    )


@pytest.mark.parametrize(
    "template",
    [
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ cycler.__init__.__globals__.os.popen('touch pwned').read() }}",
        "{% set x = messages.append({'role': 'user', 'content': 'injected'}) %}",
    ],
)
def test_hostile_templates_are_refused_by_the_sandbox(template, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match="refused by the sandbox"):
        render(template, [{"role": "user", "content": "x"}])
    assert not (tmp_path / "pwned").exists()


def test_a_conversation_must_be_messages():
    with pytest.raises(UserError, match="message 0 needs a role"):
        render("{{ messages }}", [{"role": "wizard", "content": "x"}])
    with pytest.raises(UserError, match="non-empty list"):
        render("{{ messages }}", [])


def test_greedy_64_tokens_equal_transformers_greedy(generator, tiny_model):
    import torch
    from transformers import AutoModelForCausalLM

    prompt = generator.chat_prompt(CONVERSATIONS[1], thinking=False)
    ours = generator.generate(prompt, PRESETS["greedy"], max_new_tokens=64)
    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32, attn_implementation="eager")
    with torch.no_grad():
        out = model.generate(
            torch.tensor([prompt]),
            do_sample=False,
            max_new_tokens=64,
            min_new_tokens=64,
            eos_token_id=None,
            pad_token_id=151643,
        )
    reference = out[0, len(prompt) :].tolist()
    assert ours.stop_reason == "max_new_tokens" and len(ours.tokens) == 64
    assert ours.tokens == reference


def test_same_seed_gives_the_same_tokens(generator):
    prompt = generator.tokenizer.encode("Once upon a time")
    params = SamplingParams(temperature=1.0, top_k=50, top_p=0.9, seed=7)
    a = generator.generate(prompt, params, max_new_tokens=24).tokens
    b = generator.generate(prompt, params, max_new_tokens=24).tokens
    c = generator.generate(
        prompt, SamplingParams(temperature=1.0, top_k=50, top_p=0.9, seed=8), max_new_tokens=24
    ).tokens
    assert a == b and a != c


def test_next_turn_reuses_the_cached_prefix_and_matches_a_fresh_run(generator, tiny_f32):
    first = generator.chat_prompt(CONVERSATIONS[1], thinking=False)
    answer = generator.generate(first, PRESETS["greedy"], max_new_tokens=12)
    follow_up = CONVERSATIONS[1] + [
        {"role": "assistant", "content": answer.text},
        {"role": "user", "content": "And 3+3?"},
    ]
    second = generator.chat_prompt(follow_up, thinking=False)
    reused = generator.generate(second, PRESETS["greedy"], max_new_tokens=12)
    assert reused.reused_tokens >= len(first) - 6  # all but the empty think block of the generation prompt
    fresh = Generator.from_gguf(tiny_f32, n_ctx=512).generate(second, PRESETS["greedy"], max_new_tokens=12)
    assert fresh.reused_tokens == 0 and fresh.tokens == reused.tokens


def test_generation_stops_on_an_end_of_generation_token(generator):
    prompt = generator.tokenizer.encode("The")
    first = generator.generate(prompt, PRESETS["greedy"], max_new_tokens=1).tokens[0]
    generator.stop_ids.add(first)
    try:
        result = generator.generate(prompt, PRESETS["greedy"], max_new_tokens=50)
    finally:
        generator.stop_ids.discard(first)
    assert result.stop_reason == "eos" and result.tokens == [first] and result.decode_tokens == 0
    assert 151645 in generator.stop_ids and 151643 in generator.stop_ids


def test_a_prompt_longer_than_the_context_is_refused(tiny_f32):
    small = Generator.from_gguf(tiny_f32, n_ctx=16)
    with pytest.raises(UserError, match="the context holds 16"):
        small.generate(list(range(20)), PRESETS["greedy"])


# ----------------------------------------------------------------------------- commands


def test_tokenize_prints_ids_and_pieces(tiny_f32, tmp_path):
    proc = run_cli("tokenize", "--model", str(tiny_f32), "--text", "Hello world<|im_end|>")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["    9707 -> 'Hello'", "    1879 -> ' world'", "  151645 -> '<|im_end|>'"]
    messages = tmp_path / "m.json"
    messages.write_text(json.dumps(CONVERSATIONS[0]))
    proc = run_cli("tokenize", "--model", str(tiny_f32), "--chat", str(messages), "--thinking", "off", "--json")
    out = json.loads(proc.stdout)
    assert out["ids"][:3] == [151644, 872, 198] and out["pieces"][-4:] == ["<think>", "\n\n", "</think>", "\n\n"]


def test_generate_json_reports_tokens_text_stop_reason_and_timings(tiny_f32):
    proc = run_cli(
        "generate",
        "--model",
        str(tiny_f32),
        "--prompt",
        "To be",
        "--chat",
        "--thinking",
        "off",
        "--temperature",
        "0",
        "--max-new-tokens",
        "5",
        "--json",
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert len(out["tokens"]) == 5 and out["stop_reason"] == "max_new_tokens" and isinstance(out["text"], str)
    assert out["prefill_tokens_per_s"] > 0 and out["ttft_s"] > 0 and out["params"]["temperature"] == 0


def run_chat(model, typed: str, *flags: str):
    """`qwen3repro chat` with `typed` as the user's input; it must exit 0."""
    import subprocess

    from helpers import BIN, REPO

    proc = subprocess.run(
        [str(BIN / "qwen3repro"), "chat", "--model", str(model), *flags],
        input=typed,
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    return proc


def test_generate_n_probs_gives_every_tokens_candidates_and_the_nucleus_cut_the_sampler_made(tiny_f32):
    from qwen3repro.engine.generate import Generator
    from qwen3repro.engine.sampler import SamplingParams, filter_distribution

    flags = ["--temperature", "0.8", "--top-k", "10", "--top-p", "0.9", "--seed", "5", "--max-new-tokens", "6"]
    proc = run_cli("generate", "--model", str(tiny_f32), "--prompt", "To be", *flags, "--n-probs", "5", "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    params = SamplingParams(**out["params"])
    logits = []
    generator = Generator.from_gguf(tiny_f32, n_ctx=256)
    again = generator.generate(out["prompt_ids"], params, 6, observe=lambda _t, z, _d: logits.append(z.copy()))
    assert again.tokens == out["tokens"] and len(out["probs"]) == len(out["tokens"])
    for step, token, z in zip(out["probs"], out["tokens"], logits):
        d = filter_distribution(z, params)
        expected_top = np.argsort(-d.probs_before, kind="stable")[:5]
        assert [c["id"] for c in step["top"]] == expected_top.tolist() and step["id"] == token
        assert np.allclose([c["p"] for c in step["top"]], d.probs_before[expected_top], rtol=1e-12)
        assert step["nucleus"]["size"] == len(d.ids) <= 10
        assert step["nucleus"]["mass"] == pytest.approx(d.probs_before[d.ids].sum(), rel=1e-12)
        assert step["nucleus"]["cutoff"] == pytest.approx(d.probs_before[d.ids].min(), rel=1e-12)
        inside = [c["p_nucleus"] > 0 for c in step["top"]]
        assert inside == [i in set(d.ids.tolist()) for i in expected_top.tolist()]


def test_chat_show_probs_prints_a_candidates_line_per_token(tiny_f32):
    proc = run_chat(tiny_f32, "Hello\n/exit\n", "--max-new-tokens", "4", "--show-probs", "3")
    lines = [line for line in proc.stdout.splitlines() if "| nucleus " in line]
    assert len(lines) == 4 and all(line.count("*") >= 1 and " p=" in line for line in lines), proc.stdout


def test_chat_streams_answers_and_reuses_the_prefix_across_turns(tiny_f32):
    flags = ["--system", "Be brief.", "--thinking", "off", "--max-new-tokens", "6", "--seed", "3"]
    proc = run_chat(tiny_f32, "Hello\nAgain\n/exit\n", *flags)
    stats = [line for line in proc.stderr.splitlines() if line.startswith("[prompt")]
    assert len(stats) == 2 and "(0 reused)" in stats[0] and "(0 reused)" not in stats[1]
    assert "tok/s" in stats[1] and "first token" in stats[1]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--temperature", "-1"], "temperature must be >= 0"),
        (["--top-p", "1.5"], "top-p must be in (0, 1]"),
        (["--top-k", "-2"], "top-k must be >= 0"),
        (["--n-ctx", "4", "--prompt", "a b c d e f g h"], "the context holds 4"),
    ],
)
def test_generate_bad_values_are_one_line_errors(tiny_f32, args, message):
    base = ["generate", "--model", str(tiny_f32)]
    proc = run_cli(*base, *(args if "--prompt" in args else args + ["--prompt", "hi"]))
    assert_one_line_error(proc, message)


def test_not_a_gguf_is_a_one_line_error(tmp_path):
    bad = tmp_path / "x.gguf"
    bad.write_text("hello")
    assert_one_line_error(run_cli("generate", "--model", str(bad), "--prompt", "hi"), "not a GGUF file")
    assert_one_line_error(run_cli("tokenize", "--model", str(tmp_path / "none.gguf"), "--text", "hi"), "cannot open")
