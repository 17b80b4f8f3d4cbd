import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_REFERENCE = REPO.parent / "shared" / "reference"
BIN = Path(sys.executable).parent
# Checks with short prompts, for the tests' pipeline runs: the gate's bounds are the config's own
SHORT_CHECK = {"max_tokens": 128, "greedy_tokens": 16}


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """The CI model, built once per test session as the pipeline builds it."""
    from qwen3repro.config import load_config
    from qwen3repro.model.sources import materialize

    spec = load_config(REPO / "config" / "qwen3-tiny.yaml")["models"]["qwen3-tiny"]
    return materialize("qwen3-tiny", spec, tmp_path_factory.mktemp("models") / "qwen3-tiny")


@pytest.fixture(scope="session")
def shape_model(tmp_path_factory) -> Path:
    """Qwen3-0.6B's exact shape with seeded weights (BF16, as the Hub ships it): about 20 s."""
    from qwen3repro.model import synthetic

    path = tmp_path_factory.mktemp("qwen3-0.6b-shape")
    synthetic.build(path, "qwen3-0.6b-shape", seed=0, dtype="bfloat16")
    return path


@pytest.fixture(scope="session")
def tiny_f32(tiny_model, tmp_path_factory) -> Path:
    """The CI model as an F32 GGUF."""
    from qwen3repro.convert.converter import convert

    path = tmp_path_factory.mktemp("gguf") / "qwen3-tiny-F32.gguf"
    convert(tiny_model, "F32", path, name="qwen3-tiny")
    return path


STAND_IN = "qwen3-0.6b-shape"


def quick_training_config(path: Path) -> Path:
    """The default config with a training budget of seconds instead of minutes, and short checks,
    benchmarks, perplexity runs and sweeps; the accuracy gate is the config's own. The true-scale
    stand-in becomes the CI model (qwen3-tiny, committed reference and all) with the stand-in's stages."""
    import yaml

    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    stand_in = config["models"].pop(STAND_IN)
    stand_in["stages"]["bench"].update(n_prompt=[16], n_gen=[8], repetitions=2)
    config["models"]["qwen3-tiny"] = {**stand_in, "preset": "qwen3-tiny", "dtype": "float32"}
    for spec in config["models"].values():
        if spec["source"] == "trained":
            spec["training"].update(steps=4, batch_size=2, seq_len=32, warmup_steps=1, eval_every=2, eval_windows=4)
    config["bench"] = {**config.get("bench", {}), "n_prompt": [16], "n_gen": [8], "repetitions": 2}
    config["perplexity"] = {**config.get("perplexity", {}), "chunks": 2}
    config["sweep"] = {**config.get("sweep", {}), "seeds": [0], "max_new_tokens": 8}
    config["check"] = {**config.get("check", {}), **SHORT_CHECK}
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


@pytest.fixture(scope="session")
def pipeline_run(tmp_path_factory):
    """The default config run once, offline, as `make run` runs it (but for a 4-step training
    budget and short benchmarks, perplexity runs and sweeps), then run again."""
    workdir = tmp_path_factory.mktemp("pipeline")
    config = quick_training_config(workdir / "config.yaml")
    first = run_snakemake(workdir, "--configfile", str(config))
    again = run_snakemake(workdir, "--configfile", str(config)) if first.returncode == 0 else None
    return workdir, config, first, again


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
