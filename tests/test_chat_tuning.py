"""Chat tuning: conversations from the plays rendered as inference renders them, the row split that
changes no logit, the assistant-only loss, the trajectory's distribution, and the phase end to end."""

import json
from importlib.resources import files

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer

from qwen3repro.engine.chat_template import render
from qwen3repro.model import chat_tuning, dialogue, shakespeare, tokenizer_files, trajectory
from qwen3repro.model.train_ops import Vocabulary

TEMPLATE = files("qwen3repro.data").joinpath("qwen3-chat-template.jinja").read_text("utf-8")

PLAY = (
    """SCENE I. A street.

[Enter MENENIUS and a Citizen.]

FIRST CITIZEN.
Before we proceed any further, hear me speak.

MENENIUS.
Speak, speak. [Aside.] Well?

FIRST CITIZEN.
You are all resolved rather to die than to famish?

MENENIUS.
Resolved, resolved.

SCENE II. Another street.

Ham.
A line of Hamlet's.

Hor.
And one of Horatio's.

"""
    + "Hamlet Horatio " * 10
)


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tok")
    tokenizer_files.write_tokenizer_files(folder)
    return Tokenizer.from_file(str(folder / "tokenizer.json"))


def small_model(rows: int):
    """A one-layer Qwen3ForCausalLM with tied embeddings over `rows` rows (random weights)."""
    from transformers import Qwen3Config, Qwen3ForCausalLM

    config = Qwen3Config(
        vocab_size=rows,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=16,
        tie_word_embeddings=True,
    )
    return Qwen3ForCausalLM(config)


def encode(tokenizer):
    return lambda text: tokenizer.encode(text, add_special_tokens=False).ids


def test_speeches_are_named_blocks_without_stage_directions_and_short_names_are_expanded():
    found = dialogue.speeches(PLAY)
    assert [(s.speaker, s.text, s.scene) for s in found] == [
        ("FIRST CITIZEN", "Before we proceed any further, hear me speak.", 1),
        ("MENENIUS", "Speak, speak. Well?", 1),
        ("FIRST CITIZEN", "You are all resolved rather to die than to famish?", 1),
        ("MENENIUS", "Resolved, resolved.", 1),
        ("HAMLET", "A line of Hamlet's.", 2),
        ("HORATIO", "And one of Horatio's.", 2),
    ]
    assert dialogue.title("henry_iv_part_1") == "Henry IV Part 1"


def test_an_example_is_what_the_template_renders_prompt_then_reply_thinking_on_and_off(tokenizer):
    """The prompt is the template's generation prompt, tokenized alone as inference tokenizes it; prompt and
    target together are the template's rendering of the finished conversation (the reply's think span in
    reasoning_content, the empty block with thinking off)."""
    speech = dialogue.speeches(PLAY)
    for thinking in (True, False):
        pairs = [(speech[0], speech[1]), (speech[2], speech[3])]
        prompt, target = dialogue.render_example(
            TEMPLATE, encode(tokenizer), "coriolanus", "MENENIUS", "FIRST CITIZEN", pairs, thinking
        )
        messages = [
            {"role": "system", "content": "You are MENENIUS."},
            {"role": "user", "content": speech[0].text},
            {"role": "assistant", "content": speech[1].text},
            {"role": "user", "content": speech[2].text},
        ]
        assert prompt == encode(tokenizer)(render(TEMPLATE, messages, enable_thinking=thinking))
        reasoning = "I am MENENIUS, in Coriolanus; FIRST CITIZEN speaks to me." if thinking else ""
        finished = messages + [{"role": "assistant", "content": speech[3].text, "reasoning_content": reasoning}]
        whole = render(TEMPLATE, finished, add_generation_prompt=False)
        assert tokenizer.decode(prompt + target, skip_special_tokens=False) + "\n" == whole
        assert tokenizer.decode(target, skip_special_tokens=False).endswith("Resolved, resolved.<|im_end|>")


def test_conversations_come_from_the_training_works_alone_and_are_the_same_for_the_same_seed(tokenizer):
    train_works, held_out = shakespeare.split(10)
    some = dict(list(train_works.items())[:2])
    a = dialogue.build(some, TEMPLATE, encode(tokenizer), 192, 32, seed=0)
    assert a == dialogue.build(some, TEMPLATE, encode(tokenizer), 192, 32, seed=0)
    assert {e.work for e in a} <= set(some) and not {e.work for e in a} & set(held_out)
    assert {e.thinking for e in a} == {True, False} and {e.turns for e in a} == {1, 2}
    assert all(len(e.prompt) + len(e.target) <= 192 for e in a)


def test_splitting_rows_off_the_shared_row_changes_no_logit():
    torch.manual_seed(0)
    size = 300
    old = Vocabulary(np.arange(0, 200, 2), size)
    new = Vocabulary(np.concatenate([old.seen, [251, 299]]), size)
    model, grown = small_model(old.n_rows).eval(), small_model(new.n_rows).eval()
    grown.load_state_dict(chat_tuning.regrown_state(model, old, new))
    ids = [4, 251, 7, 299, 120]
    before = trajectory.full_logits(model, old, ids)
    after = trajectory.full_logits(grown, new, ids)
    assert np.array_equal(before, after)


def test_the_loss_reads_the_assistant_tokens_alone():
    vocab = Vocabulary(np.arange(50), 100)
    a = dialogue.Example("w", (1, 2, 3), (4, 5), True, 1)
    b = dialogue.Example("w", (6, 7), (8, 9, 10), False, 1)
    rows, where, targets = chat_tuning.padded([a, b], vocab)
    assert rows.shape == (2, 4)  # the longer example, less its last token
    assert where.tolist() == [[0, 2], [0, 3], [1, 1], [1, 2], [1, 3]]
    assert targets.tolist() == [4, 5, 8, 9, 10]


def test_a_snapshot_gives_the_top_tokens_and_the_rest_of_the_vocabulary(tokenizer):
    torch.manual_seed(0)
    vocab = Vocabulary(np.arange(1000), 151936)
    model = small_model(vocab.n_rows)
    decode = lambda ids: tokenizer.decode(ids, skip_special_tokens=False)  # noqa: E731
    point = trajectory.snapshot(model, vocab, [1, 2, 3], decode, "random initialisation", 0, "pretraining")
    probabilities = [t["probability"] for t in point["top"]]
    assert len(probabilities) == trajectory.TOP and probabilities == sorted(probabilities, reverse=True)
    assert sum(probabilities) + point["rest"] == pytest.approx(1.0, abs=1e-12)
    assert model.training  # left as it was found


@pytest.mark.slow
def test_a_short_chat_phase_writes_both_phases_and_the_trajectory(tmp_path):
    from qwen3repro.model.train import train

    quick = dict(steps=4, batch_size=2, seq_len=16, warmup_steps=1, eval_every=2, eval_windows=2, threads=1)
    chat = dict(steps=2, batch_size=2, warmup_steps=1, eval_every=1, eval_examples=4, text_windows=1)
    recipe = train(tmp_path, "qwen3-shakespeare", {"num_hidden_layers": 1}, 0, {**quick, "chat": chat})
    assert recipe["steps_done"] == 6 and recipe["final_chat_held_out_loss"] < recipe["initial_chat_held_out_loss"]
    curve = (tmp_path / "training_curve.csv").read_text().splitlines()
    assert curve[0] == "step,phase,learning_rate,train_loss,held_out_loss,chat_held_out_loss,seconds"
    assert [line.split(",")[:2] for line in curve[1:]] == [
        ["0", "pretraining"],
        ["2", "pretraining"],
        ["4", "pretraining"],
        ["5", "chat tuning"],
        ["6", "chat tuning"],
    ]
    points = json.loads((tmp_path / "trajectory.json").read_text())["checkpoints"]
    assert [p["label"] for p in points] == ["random initialisation", "mid-pretraining", "pretrained", "chat-tuned"]
