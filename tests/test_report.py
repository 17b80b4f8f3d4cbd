"""The comparison report: a page that renders in a browser, numbers read from the stage outputs,
and a one-line error for a missing one."""

import json
import shutil

import pytest
from helpers import chromium

from qwen3repro.config import load_config
from qwen3repro.errors import UserError
from qwen3repro.report.page import write_report


@pytest.fixture(scope="module")
def run(pipeline_run):
    workdir, config_path, proc, _ = pipeline_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    return workdir, load_config(config_path)


def test_page_renders_in_headless_chromium_with_every_image_and_no_console_error(run, tmp_path):
    workdir, _ = run
    page = workdir / "results" / "report" / "index.html"
    browser = chromium()
    try:
        browser.get(page.as_uri())
        # the first screen answers the page's title: the verdict, then the answer table, whole
        first_screen = browser.execute_script(
            "const t = document.querySelector('table.answers'), v = document.querySelector('ul.verdict');"
            "return [v.getBoundingClientRect().top, t.getBoundingClientRect().bottom, window.innerHeight]"
        )
        images = browser.execute_script(
            "return Array.from(document.images).map(i => [i.alt, i.complete, i.naturalWidth, i.naturalHeight])"
        )
        errors = [e for e in browser.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]
        height = browser.execute_script("return document.body.scrollHeight")
        browser.set_window_size(1300, min(height, 12000))
        shot = tmp_path / "report.png"
        browser.save_screenshot(str(shot))
        title = browser.title
    finally:
        browser.quit()
    assert title == "qwen3repro report"
    verdict_top, answers_bottom, viewport = first_screen
    assert verdict_top < answers_bottom <= viewport, first_screen
    assert len(images) >= 6 and all(complete and w > 0 and h > 0 for _, complete, w, h in images), images
    assert errors == []
    assert shot.stat().st_size > 10_000


def test_every_number_comes_from_the_stage_outputs_a_changed_input_changes_the_page(run, tmp_path):
    workdir, config = run
    part = workdir / "results" / "perplexity" / "qwen3-shakespeare" / "Q4_0.json"
    original = part.read_bytes()
    data = json.loads(original)
    data["perplexity"]["ppl"] = 987.654321
    before = (workdir / "results" / "report" / "index.html").read_text()
    assert "987.654" not in before
    try:
        part.write_text(json.dumps(data))
        write_report(config, tmp_path / "index.html", tmp_path / "summary.md", root=workdir)
    finally:
        part.write_bytes(original)
    page, summary = (tmp_path / "index.html").read_text(), (tmp_path / "summary.md").read_text()
    assert "987.654 ± " in page and "| Q4_0 |" in summary and "987.654 ± " in summary


def test_a_missing_stage_output_is_a_one_line_error_naming_it(run, tmp_path):
    workdir, config = run
    part = workdir / "results" / "check" / "qwen3-shakespeare" / "Q4_K_M.json"
    moved = tmp_path / "moved.json"
    shutil.move(part, moved)
    try:
        with pytest.raises(UserError) as e:
            write_report(config, tmp_path / "index.html", tmp_path / "summary.md", root=workdir)
    finally:
        shutil.move(moved, part)
    assert str(e.value) == f"report: missing stage output {part} (from the check stage)"
    assert not (tmp_path / "index.html").exists() and not (tmp_path / "summary.md").exists()


def test_values_a_stage_did_not_measure_are_shown_as_a_dash(run, tmp_path):
    """llama.cpp's figures left out (as without llama-cpp-python: its bench rows and its perplexity
    figures): its columns go, no number is made up."""
    workdir, config = run
    bench = workdir / "results" / "bench" / "qwen3-tiny.json"
    parts = sorted((workdir / "results" / "perplexity" / "qwen3-shakespeare").glob("*.json"))
    tasks = sorted((workdir / "results" / "tasks" / "qwen3-shakespeare").glob("*.json"))
    tasks = [t for t in tasks if t.name != "generations.json"]
    originals = {path: path.read_bytes() for path in [bench, *parts, *tasks]}
    try:
        bench.write_text(json.dumps([r for r in json.loads(originals[bench]) if r["engine"] != "llama.cpp"]))
        for part in parts:
            part.write_text(json.dumps({k: v for k, v in json.loads(originals[part]).items() if k != "llama_cpp"}))
        for part in tasks:
            data = json.loads(originals[part])
            data["runtimes"].pop("llama.cpp")
            part.write_text(json.dumps(data))
        write_report(config, tmp_path / "index.html", tmp_path / "summary.md", root=workdir)
    finally:
        for path, data in originals.items():
            path.write_bytes(data)
    summary = (tmp_path / "summary.md").read_text()
    assert "llama.cpp" not in summary
    stand_in = summary.split("## qwen3-tiny")[1]
    q6k = next(line for line in stand_in.splitlines() if line.startswith("| Q6_K |"))
    assert "—" in q6k  # converted but not benchmarked: no load time, no speed


def test_snakemakes_own_report_has_the_same_figures(run, tmp_path):
    from helpers import run_snakemake

    workdir, _ = run
    out = tmp_path / "snakemake-report.html"
    proc = run_snakemake(workdir, "--configfile", str(workdir / "config.yaml"), "--report", str(out))
    assert proc.returncode == 0, proc.stderr[-2000:]
    page = out.read_text()
    figures = sorted(p.name for p in (workdir / "results" / "report" / "figures").glob("*.png"))
    assert len(figures) >= 6 and all(name in page for name in figures)
    assert "summary.md" in page
