"""What the tests share that is not a fixture: running the CLI and Snakemake, llama.cpp's tools, headless
Chromium, the quick pipeline config, and the one-line-error assertion."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_REFERENCE = REPO.parent / "shared" / "reference"
BIN = Path(sys.executable).parent
STAND_IN = "qwen3-0.6b-shape"

# Checks with short prompts, for the tests' pipeline runs: the gate's bounds are the config's own
SHORT_CHECK = {"max_tokens": 128, "greedy_tokens": 16}


def default_config() -> dict:
    """config/config.yaml with its layers beneath it, as a run reads it (not yet validated)."""
    import yaml

    from qwen3repro.config import with_layers

    path = REPO / "config" / "config.yaml"
    return with_layers(yaml.safe_load(path.read_text()), [path])


def quick_training_config(path: Path) -> Path:
    """The default config with a training budget of seconds instead of minutes, and short checks,
    benchmarks, perplexity runs, sweeps and task sets; the accuracy gate is the config's own. The true-scale
    stand-in becomes the CI model (qwen3-tiny, committed reference and all) with the stand-in's stages."""
    import yaml

    config = default_config()
    stand_in = config["models"].pop(STAND_IN)
    stand_in["stages"]["bench"].update(n_prompt=[16], n_gen=[8], repetitions=2)
    stand_in["stages"]["bench"]["low_memory"].update(n_prompt=[16], n_gen=[4], repetitions=2)
    config["models"]["qwen3-tiny"] = {**stand_in, "preset": "qwen3-tiny", "dtype": "float32"}
    for spec in config["models"].values():
        if spec["source"] == "trained":
            # 40 steps (half a minute): enough structure in the logits for the quantization ladder to
            # stand out of llama-perplexity's 16-bit storage of them
            spec["training"].update(steps=40, warmup_steps=8, eval_every=20, eval_windows=4)
            if spec["training"].get("chat"):  # the chat phase's machinery, not its skill: a few steps
                spec["training"]["chat"].update(steps=6, warmup_steps=2, eval_every=3, eval_examples=8)
    config["bench"] = {**config.get("bench", {}), "n_prompt": [16], "n_gen": [8], "repetitions": 2}
    config["perplexity"] = {**config.get("perplexity", {}), "chunks": 2, "parts": 2}
    config["sweep"] = {**config.get("sweep", {}), "seeds": [0], "max_new_tokens": 8}
    config["check"] = {**config.get("check", {}), **SHORT_CHECK}
    config["tasks"] = {"sets": {"blank": {"source": "shakespeare", "build": "blank", "tasks": 8}}, "parts": 2}
    path.write_text(yaml.safe_dump(config))
    return path


def run_snakemake(workdir: Path, *args: str, timeout: int = 1800) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "snakemake"), "-s", str(REPO / "Snakefile"), "-d", str(workdir), "--cores", "2", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "QWEN3REPRO_QUIET": "1"},
    )


def run_cli(*args: str, cwd: Path = REPO, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "qwen3repro"), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=600,
    )


LLAMA_TOOLS = REPO / ".venv" / "llama.cpp" / "build" / "bin"


def llama_tool(name: str) -> Path:
    """One of llama.cpp's command-line tools (make llama-tools); in CI its absence is a failure."""
    path = Path(os.environ.get("QWEN3REPRO_LLAMA_TOOLS", LLAMA_TOOLS)) / name
    if not path.is_file():
        message = f"{path} is not built (make llama-tools builds it from llama-cpp-python's source)"
        pytest.fail(message) if os.environ.get("CI") else pytest.skip(message)
    return path


def assert_one_line_error(proc: subprocess.CompletedProcess, *needles: str) -> None:
    assert proc.returncode != 0, proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def chromium():
    """Headless Chromium driven by Selenium, or a skip saying what is missing."""
    try:
        from selenium import webdriver
    except ImportError:
        pytest.skip("selenium is not installed (the test extra)")
    browser, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (browser and driver):
        pytest.skip(
            "headless Chromium is not installed: apt-get install chromium chromium-driver "
            "(make test does this where it runs as root)"
        )
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1300,1000",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=driver))
