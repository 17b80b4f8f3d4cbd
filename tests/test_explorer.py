"""The report's sampling explorer: in headless Chromium, the page re-filters a recorded step as the
engine's sampler filters the full logits (nucleus size, mass, probabilities within the error the
page states, at most 1e-4), steps with the keyboard, fits a phone; a bad trace file is one line."""

import json

import numpy as np
import pytest
from helpers import chromium
from threadpoolctl import threadpool_limits

from qwen3repro.config import load_config
from qwen3repro.engine.sampler import SamplingParams, filter_distribution
from qwen3repro.errors import UserError
from qwen3repro.report.page import write_report
from qwen3repro.sweep.runner import Runner

MAX_ERROR = 1e-4


@pytest.fixture(scope="module")
def run(pipeline_run):
    workdir, config_path, proc, _ = pipeline_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    return workdir, load_config(config_path)


def full_logits(workdir, config, model: str, file_type: str, trace: dict) -> list[np.ndarray]:
    """Every step's logits over the whole vocabulary, by generating the trace again (same file,
    prompt, preset and seed, and for a trace along another file's tokens those tokens: the same
    steps, which the recorded ones confirm). On one BLAS thread, as the traces rule ran: a matrix
    product split over more threads sums in another order, and a rounded gap can move by 1e-6."""
    settings = config["sweep"]
    runner = Runner(workdir / f"results/gguf/{model}/{model}-{file_type}.gguf", settings)
    prompt = next(p for p in settings["prompts"] if p["name"] == trace["prompt"])
    captured = []
    with threadpool_limits(limits=1):
        again = runner.trace(
            prompt["messages"],
            trace["preset"],
            trace["thinking"],
            trace["seed"],
            len(trace["steps"][0]["ids"]),
            observe=lambda _token, logits, _dist: captured.append(np.asarray(logits, np.float64)),
            forced=trace["tokens"] if trace.get("along") else None,
        )
    assert again["steps"] == json.loads(json.dumps(trace["steps"]))
    return captured


def reference(logits: np.ndarray, params: dict) -> dict:
    """What the sampler does with the full logits: nucleus size and mass, every token's probability
    after temperature, after the filters, and how clear the top-p and min-p cuts are."""
    d = filter_distribution(logits, SamplingParams(**params, seed=0))
    after = np.zeros_like(d.probs_before)
    after[d.ids] = d.probs
    kept = d.probs_before[d.ids]
    return {"size": len(d.ids), "mass": float(kept.sum()), "probs": d.probs_before, "after": after}


def check_against_sampler(page: dict, ids: list[int], ref: dict, stored: int) -> None:
    eps, eps_after = page["eps"], page["epsAfter"]
    assert eps <= MAX_ERROR, eps
    for i, token in enumerate(ids):
        assert abs(page["probs"][i] - ref["probs"][token]) <= eps * ref["probs"][token] + 1e-12
    if ref["size"] > stored:  # the nucleus reaches past the stored candidates: the page says so
        assert page["beyond"] and page["size"] > stored, (page["size"], ref["size"])
        return
    if page["estimated"]:  # top-k past the stored candidates, then top-p: a cut on an estimated mass
        assert abs(page["size"] - ref["size"]) <= 2, (page["size"], ref["size"])
        return
    assert eps_after <= MAX_ERROR, eps_after
    assert not page["beyond"], (page["size"], ref["size"])
    assert page["size"] == ref["size"], (page["size"], ref["size"])
    assert abs(page["mass"] - ref["mass"]) <= eps * ref["mass"] + 1e-12 <= MAX_ERROR
    for i, token in enumerate(ids):
        assert abs(page["after"][i] - ref["after"][token]) <= eps_after * ref["after"][token] + 1e-12


# settings whose cuts mostly fall clear of their thresholds on the models here (the rest are skipped, counted)
SETTINGS = [
    {"temperature": 0.6, "top_k": 20, "top_p": 0.95, "min_p": 0.0},
    {"temperature": 1.0, "top_k": 0, "top_p": 0.5, "min_p": 0.0},
    {"temperature": 0.3, "top_k": 0, "top_p": 0.9, "min_p": 0.0},
    {"temperature": 1.5, "top_k": 40, "top_p": 1.0, "min_p": 0.1},
    {"temperature": 0.8, "top_k": 10, "top_p": 0.8, "min_p": 0.05},
    {"temperature": 1.2, "top_k": 0, "top_p": 1.0, "min_p": 0.2},
]


def clear_cut(logits: np.ndarray, params: dict, stored: int) -> bool:
    """False where the reference's own top-p or min-p cut sits so near its threshold that the page's
    rounding could move it by one token: within 1e-6 where the cut is a ratio of stored weights
    (min-p, and top-p after a top-k within the stored candidates), within the stated error where
    top-p takes a share of a mass that includes the histogram's tail."""
    d = filter_distribution(logits, SamplingParams(**params, seed=0))
    probs = np.sort(d.probs_before)[::-1]
    k = params["top_k"] if 0 < params["top_k"] < len(probs) else len(probs)
    margin = 1e-6 if k <= stored else MAX_ERROR
    cumulative = np.cumsum(probs[:k]) / probs[:k].sum()
    near_p = params["top_p"] < 1 and np.min(np.abs(cumulative[: d.after_top_p + 1] - params["top_p"])) < margin
    near_min = params["min_p"] > 0 and np.min(np.abs(probs[:k] - params["min_p"] * probs[0])) < 1e-6 * probs[0]
    return not (near_p or near_min)


def set_control(browser, explorer, name: str, value) -> None:
    browser.execute_script(
        "const e = arguments[0].querySelector(arguments[1]); e.value = arguments[2];"
        "e.dispatchEvent(new Event(e.tagName === 'SELECT' ? 'change' : 'input'));",
        explorer,
        name,
        str(value),
    )


def read_panel(browser, explorer, side: int) -> dict:
    return browser.execute_script(
        """const panel = arguments[0].querySelector('.panel.side-' + arguments[1]);
        const s = panel.querySelector('.stats').dataset;
        const rows = Array.from(panel.querySelectorAll('.bar'));
        return {size: +s.size, mass: +s.mass, cutoff: +s.cutoff, eps: +s.eps, epsAfter: +s.epsAfter,
                beyond: s.beyond === 'true', estimated: s.estimated === 'true',
                ids: rows.map(r => +r.dataset.id), probs: rows.map(r => +r.dataset.p),
                after: rows.map(r => +r.dataset.after), type: panel.dataset.type,
                current: panel.querySelector('.token.current').textContent,
                text: panel.querySelector('.beyond') ? panel.querySelector('.beyond').textContent : ''}""",
        explorer,
        side,
    )


def test_controls_refilter_a_step_as_the_sampler_filters_the_full_logits(run, tmp_path):
    workdir, config = run
    model = next(iter(config["models"]))
    types = config["sweep"]["types"]
    files = {t: json.loads((workdir / f"results/sweep/{model}/{t}-traces.json").read_text()) for t in types}
    trace_index = 1  # the second generation: a preset and thinking mode other than the page's first
    left = files[types[0]]["traces"][trace_index]
    # the page's default right panel: the last type's distributions along the first type's tokens
    right = next(
        t
        for t in files[types[-1]]["traces"]
        if t.get("along") == types[0] and all(t[k] == left[k] for k in ("prompt", "preset", "thinking"))
    )
    sides = {types[0]: left, f"{types[-1]} on {types[0]}'s tokens": right}
    files_of = {types[0]: types[0], f"{types[-1]} on {types[0]}'s tokens": types[-1]}
    logits = {label: full_logits(workdir, config, model, files_of[label], trace) for label, trace in sides.items()}
    browser = chromium()
    checked = skipped = 0
    try:
        browser.get((workdir / "results/report/index.html").as_uri())
        explorer = browser.find_element("css selector", ".explorer")
        set_control(browser, explorer, ".trace-select", trace_index)
        n_steps = len(left["steps"])
        for step in sorted({0, n_steps // 2, n_steps - 1}):
            set_control(browser, explorer, ".step-slider", step)
            for params in SETTINGS:
                for name, value in params.items():
                    set_control(browser, explorer, f".control-{name}", value)
                for side, label in enumerate(sides):
                    page = read_panel(browser, explorer, side)
                    assert page["type"] == label
                    z = logits[label][step]
                    stored = len(sides[label]["steps"][step]["ids"])
                    ref = reference(z, params)
                    if ref["size"] <= stored and not clear_cut(z, params, stored):
                        skipped += 1
                        continue
                    check_against_sampler(page, page["ids"], ref, stored)
                    checked += 1
        browser.find_element("css selector", ".explorer .reset").click()
        shot = tmp_path / "explorer.png"
        explorer.screenshot(str(shot))
    finally:
        browser.quit()
    assert checked >= 20 and skipped <= checked // 4, (checked, skipped)
    assert shot.stat().st_size > 5_000


def test_the_pages_filter_matches_the_sampler_on_every_recorded_step_and_many_settings(run):
    """The page's own function over every step of one generation, at random settings."""
    workdir, config = run
    model = next(iter(config["models"]))
    file_type = config["sweep"]["types"][0]
    data = json.loads((workdir / f"results/sweep/{model}/{file_type}-traces.json").read_text())
    trace = data["traces"][0]
    logits = full_logits(workdir, config, model, file_type, trace)
    rng = np.random.default_rng(0)
    cases = []
    for i, step in enumerate(trace["steps"]):
        for _ in range(12):
            params = {
                "temperature": float(rng.choice([0.1, 0.3, 0.5, 0.7, 1.0, 1.3, 2.0])),
                "top_k": int(rng.choice([0, 1, 5, 20, 50, 64, 500])),
                "top_p": float(rng.choice([1.0, 0.95, 0.8, 0.5, 0.2])),
                "min_p": float(rng.choice([0.0, 0.0, 0.02, 0.1, 0.3])),
            }
            if reference(logits[i], params)["size"] > len(step["ids"]) or clear_cut(
                logits[i], params, len(step["ids"])
            ):
                cases.append((i, params))
    browser = chromium()
    try:
        browser.get((workdir / "results/report/index.html").as_uri())
        results = browser.execute_script(
            """const [data, cases] = arguments;
            return cases.map(([i, p]) => {
              const r = window.qwen3Explorer.distribution(data.traces[0].steps[i], data.tail_edges, p);
              return {size: r.size, mass: r.mass, eps: r.eps, epsAfter: r.epsAfter, beyond: r.beyond,
                      estimated: r.estimated,
                      probs: r.probs, after: r.after};
            });""",
            data,
            cases,
        )
    finally:
        browser.quit()
    beyond = 0
    for (i, params), page in zip(cases, results):
        step = trace["steps"][i]
        check_against_sampler(page, step["ids"], reference(logits[i], params), len(step["ids"]))
        beyond += page["beyond"]
    assert len(cases) >= 6 * len(trace["steps"]) and 0 < beyond < len(cases)


def test_arrow_keys_step_through_the_tokens_and_a_phone_sized_window_fits(run, tmp_path):
    from selenium.webdriver.common.keys import Keys

    workdir, _ = run
    browser = chromium()
    try:
        browser.set_window_size(390, 844)
        browser.get((workdir / "results/report/index.html").as_uri())
        explorer = browser.find_element("css selector", ".explorer")
        browser.execute_script("arguments[0].scrollIntoView(); arguments[0].focus();", explorer)
        label = lambda: explorer.find_element("css selector", ".step-label").text  # noqa: E731
        assert label().startswith("step 1 of ")
        explorer.send_keys(Keys.ARROW_RIGHT, Keys.ARROW_RIGHT)
        assert label().startswith("step 3 of ")
        explorer.send_keys(Keys.ARROW_LEFT)
        assert label().startswith("step 2 of ")
        current = browser.execute_script(
            "return Array.from(arguments[0].querySelectorAll('.panel.side-0 .token')).findIndex("
            "t => t.classList.contains('current'))",
            explorer,
        )
        assert current == 1
        overflow = browser.execute_script(
            "return [document.documentElement.scrollWidth, window.innerWidth,"
            " arguments[0].scrollWidth, arguments[0].clientWidth]",
            explorer,
        )
        explorer.screenshot(str(tmp_path / "phone.png"))
    finally:
        browser.quit()
    assert overflow[2] <= overflow[3] + 1, overflow  # nothing in the explorer scrolls sideways


def test_page_size_stays_under_the_stated_limit(run):
    workdir, _ = run
    assert (workdir / "results/report/index.html").stat().st_size < 8 * 2**20


@pytest.mark.parametrize(
    "damage, needle",
    [
        (None, "missing stage output"),
        (lambda d: d.pop("traces"), "no list of traces"),
        (lambda d: d["traces"][0]["steps"][0].pop("gaps"), "trace 1, step 1: needs token, ids, gaps"),
        (lambda d: d["traces"][0]["steps"][1]["gaps"].reverse(), "trace 1, step 2: ids and gaps"),
    ],
)
def test_a_malformed_trace_file_stops_the_report_with_one_line_naming_it(run, tmp_path, damage, needle):
    import shutil

    workdir, config = run
    model = next(iter(config["models"]))
    copy = tmp_path / "copy"
    shutil.copytree(workdir / "results", copy / "results", ignore=shutil.ignore_patterns("*.gguf"))
    for gguf in (workdir / "results/gguf").rglob("*-F32.gguf"):  # the report reads the F32 file's tokenizer
        (copy / gguf.relative_to(workdir)).symlink_to(gguf)
    path = copy / f"results/sweep/{model}/{config['sweep']['types'][-1]}-traces.json"
    if damage is None:
        path.unlink()
    else:
        data = json.loads(path.read_text())
        damage(data)
        path.write_text(json.dumps(data))
    with pytest.raises(UserError) as error:
        write_report(config, tmp_path / "out.html", tmp_path / "out.md", root=copy)
    message = str(error.value)
    assert "\n" not in message and str(path) in message and needle in message, message
    assert not (tmp_path / "out.html").exists()
