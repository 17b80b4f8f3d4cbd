"""Pretraining on Shakespeare: the fused output loss, the schedule, the split, determinism, bad budgets."""

import hashlib

import numpy as np
import pytest
import torch

from qwen3repro.errors import UserError
from qwen3repro.model import shakespeare
from qwen3repro.model.train import DEFAULTS, check_settings, learning_rate, train
from qwen3repro.model.train_ops import Vocabulary, output_cross_entropy

QUICK = dict(steps=3, batch_size=2, seq_len=16, warmup_steps=1, eval_every=2, eval_windows=3, threads=1)


def test_fused_output_loss_equals_cross_entropy_on_full_logits_with_its_gradients():
    torch.manual_seed(0)
    hidden = torch.randn(300, 32, dtype=torch.float64, requires_grad=True)
    weight = (0.5 * torch.randn(1000, 32, dtype=torch.float64)).requires_grad_()
    targets = torch.randint(0, 1000, (300,))
    reference = torch.nn.functional.cross_entropy(hidden @ weight.T, targets)
    reference.backward()
    loss, grad_hidden, grad_weight = output_cross_entropy(hidden.detach(), weight.detach(), targets.numpy(), chunk=64)
    assert abs(loss - reference.item()) < 1e-12
    assert torch.allclose(grad_hidden, hidden.grad, atol=1e-14) and torch.allclose(grad_weight, weight.grad, atol=1e-14)


def test_a_shared_row_gives_exactly_the_loss_and_gradients_of_the_full_vocabulary():
    """Tokens the text never holds share one row: the loss over the compact rows with the shared row's
    multiplicity is the full-vocabulary cross-entropy of the expanded matrix, and the shared row's
    gradient is the sum of its copies' (targets among the unseen tokens included, as on held-out text)."""
    torch.manual_seed(0)
    size, seen = 1000, torch.randperm(1000)[:150].numpy()
    vocab = Vocabulary(seen, size)
    hidden = torch.randn(200, 16, dtype=torch.float64, requires_grad=True)
    compact = (0.5 * torch.randn(vocab.n_rows, 16, dtype=torch.float64)).requires_grad_()
    unseen = np.setdiff1d(np.arange(size), seen)[:2]
    targets = torch.from_numpy(np.concatenate([vocab.seen[torch.randint(0, 150, (190,)).numpy()], np.tile(unseen, 5)]))
    full = compact[torch.from_numpy(vocab.lookup)]  # every token's row
    reference = torch.nn.functional.cross_entropy(hidden @ full.T, targets)
    reference.backward()
    loss, grad_hidden, grad_compact = output_cross_entropy(
        hidden.detach(), compact.detach(), vocab.rows(targets.numpy()), vocab.log_multiplicity()
    )
    assert abs(loss - reference.item()) < 1e-12
    assert torch.allclose(grad_hidden, hidden.grad, atol=1e-14)
    assert torch.allclose(grad_compact, compact.grad, atol=1e-14)
    assert np.array_equal(vocab.expand(compact.detach().numpy()), full.detach().numpy())


def test_learning_rate_warms_up_then_decays_to_its_floor():
    s = {**DEFAULTS, "steps": 100, "warmup_steps": 10, "learning_rate": 1.0, "min_lr_ratio": 0.1}
    rates = [learning_rate(i, s) for i in range(101)]
    assert rates[0] == pytest.approx(0.1) and rates[9] == pytest.approx(1.0) and rates[10] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(rates[10:], rates[11:])) and rates[100] == pytest.approx(0.1)


def test_held_out_works_are_never_trained_on_and_first_folio_copies_are_left_out():
    train_works, held_out = shakespeare.split(10)
    assert held_out and train_works and not (set(held_out) & set(train_works))
    assert len(held_out) == len(range(0, len(train_works) + len(held_out), 10))
    files = {p.name for p in shakespeare.texts_dir().glob("*.txt")}
    assert all(f"{name}_gut.txt" in files for name in [*train_works, *held_out])  # modern editions only
    assert len(files) > 2 * len(train_works)  # the package's First Folio copies are there, and left out


def test_gutenberg_header_and_footer_are_stripped():
    text = (
        "Header\n*** START OF THE PROJECT GUTENBERG EBOOK X ***\nTo be.\n"
        "*** END OF THE PROJECT GUTENBERG EBOOK X ***\nLicense"
    )
    assert shakespeare.strip_gutenberg(text) == "To be.\n"


def digest(path) -> str:
    return hashlib.sha256((path / "model.safetensors").read_bytes()).hexdigest()


def test_the_same_seed_gives_bitwise_the_same_weights_and_curve(tmp_path):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    for d in (a, b, c):
        d.mkdir()
    ra = train(a, "qwen3-shakespeare", None, 0, QUICK)
    rb = train(b, "qwen3-shakespeare", None, 0, QUICK)
    rc = train(c, "qwen3-shakespeare", None, 1, QUICK)
    assert digest(a) == digest(b) != digest(c)
    assert (a / "training_curve.csv").read_text().split("seconds")[0] == (b / "training_curve.csv").read_text().split(
        "seconds"
    )[0]
    curve_a = np.genfromtxt(a / "training_curve.csv", delimiter=",", names=True)
    curve_b = np.genfromtxt(b / "training_curve.csv", delimiter=",", names=True)
    assert np.array_equal(curve_a["held_out_loss"], curve_b["held_out_loss"])
    assert ra["final_held_out_loss"] == rb["final_held_out_loss"] != rc["final_held_out_loss"]
    assert ra["steps_done"] == 3 and ra["initial_held_out_loss"] == pytest.approx(np.log(151936), abs=0.2)


def test_a_zero_budget_and_a_corpus_smaller_than_a_batch_are_one_line_errors(tmp_path):
    with pytest.raises(UserError, match="training.steps must be at least 1"):
        check_settings({"steps": 0})
    with pytest.raises(UserError, match="fewer than one batch"):
        train(tmp_path, "qwen3-shakespeare", None, 0, {**QUICK, "batch_size": 100, "seq_len": 100_000})


def test_a_time_limit_that_is_reached_fails_training_instead_of_cutting_it_short(tmp_path):
    """A model stopped by the clock would depend on the machine's speed: reaching the guard is an error."""
    with pytest.raises(UserError, match=r"^training.max_minutes: 1e-06 minutes reached after 0 of 3 steps; "):
        train(tmp_path, "qwen3-shakespeare", None, 0, {**QUICK, "max_minutes": 1e-6})


def test_the_shipped_configs_have_no_clock_limit(repo):
    import yaml

    for path in sorted((repo / "config").glob("*.yaml")):
        for spec in (yaml.safe_load(path.read_text()).get("models") or {}).values():
            assert "max_minutes" not in spec.get("training", {}), path


def test_a_zero_budget_in_the_config_is_refused_before_anything_runs(tmp_path, repo):
    from helpers import assert_one_line_error, run_cli

    bad = tmp_path / "bad.yaml"
    bad.write_text("models:\n  m:\n    source: trained\n    preset: qwen3-shakespeare\n    training: {steps: 0}\n")
    proc = run_cli("check-config", str(bad))
    assert_one_line_error(proc, "models.m.training.steps", "minimum of 1")


def test_engine_and_transformers_agree_with_the_trainers_held_out_loss(tmp_path):
    from qwen3repro.accuracy.scoring import engine_cross_entropy, transformers_cross_entropy
    from qwen3repro.convert.converter import convert
    from qwen3repro.model.train import held_out_set

    model = tmp_path / "m"
    model.mkdir()
    recipe = train(model, "qwen3-shakespeare", None, 0, QUICK)
    convert(model, "F32", tmp_path / "m.gguf")
    windows = held_out_set(model, QUICK)
    ours, theirs = engine_cross_entropy(tmp_path / "m.gguf", windows), transformers_cross_entropy(model, windows)
    assert abs(ours - theirs) < 1e-4 and abs(ours - recipe["final_held_out_loss"]) < 1e-4
