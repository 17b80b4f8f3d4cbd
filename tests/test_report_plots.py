"""The report's plots and answer table on made-up frames: labels never overlap, coinciding points are
labelled once, and a speed whose repetitions disagree by 10% or more is marked, never shown as a speed."""

import pandas as pd

from qwen3repro.report import figures, speed_figures
from qwen3repro.report.answers import answer_table
from qwen3repro.report.inputs import ModelSection
from qwen3repro.report.tables import speed_cell


def test_labels_of_crowded_points_do_not_overlap_and_coinciding_points_are_labelled_once():
    plt = figures.pyplot()
    fig, axis = plt.subplots(figsize=(4, 3))
    points = [(8.3 + 0.01 * i, 1e-3 * (1 + 0.05 * i), f"T{i}") for i in range(12)]
    points += [(8.3, 1e-3, "same-as-T0")]
    axis.scatter([p[0] for p in points], [p[1] for p in points])
    axis.set_yscale("log")
    fig.canvas.draw()
    texts = figures.label_points(axis, points)
    assert len(texts) == 12 and "T0, same-as-T0" in [t.get_text() for t in texts]
    renderer = fig.canvas.get_renderer()
    boxes = [t.get_window_extent(renderer) for t in texts] + [axis.title.get_window_extent(renderer)]
    assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1 :])
    # nor does a label cover a point
    for px, py in axis.transData.transform([(x, y) for x, y, _ in points]):
        assert not any(box.contains(px, py) for box in boxes[:-1]), (px, py)
    plt.close(fig)


def bench_rows(samples: dict[tuple[str, str], tuple[float, float]], shares: dict | None = None) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "engine": engine,
                "model_type": t,
                "test": "tg32",
                "avg_ts": avg,
                "stddev_ts": sd,
                "ceiling_share": (shares or {}).get((engine, t), 0.5),
                "bytes_per_token": 1e9,
                "bandwidth_gbs": 20.0,
            }
            for (engine, t), (avg, sd) in samples.items()
        ]
    )


def section(bench: pd.DataFrame) -> ModelSection:
    return ModelSection(
        name="m", manifest={}, hf_config={}, n_parameters=1, tokenizer={}, types=pd.DataFrame(), bench=bench
    )


def test_the_fastest_decode_is_the_fastest_steady_measurement_and_noise_is_said():
    bench = bench_rows(
        {("numpy", "F32"): (10.0, 0.5), ("numpy", "Q4_K_M"): (30.0, 6.0), ("llama.cpp", "Q4_K_M"): (40.0, 8.0)}
    )
    _, rows = answer_table([section(bench)], 0.01)
    answers = {question: answer for question, answer, _ in rows}
    # Q4_K_M measured faster, but its repetitions spread by 20%: not a speed anyone can quote
    assert answers["fastest decode, numpy"].startswith("F32: 10.0 ± 0.5 t/s (tg32), 50%")
    assert answers["fastest decode, numpy"].endswith("too noisy to rank: Q4_K_M 30.0 ± 6.0")
    assert answers["fastest decode, llama.cpp"].startswith("no row steady enough")
    assert speed_cell(30.0, 6.0) == "30.0 ± 6.0 (noisy)" and speed_cell(30.0, 2.9) == "30.0 ± 2.9"


def test_no_share_of_the_roofline_above_100_percent_reaches_the_answers():
    # Q8_0 measured "faster than the machine can read its weights": the probe and the bench disagreed
    bench = bench_rows(
        {("numpy", "F32"): (10.0, 0.3), ("numpy", "Q8_0"): (12.0, 0.3), ("llama.cpp", "F32"): (11.0, 0.3)},
        shares={("numpy", "F32"): 0.9, ("numpy", "Q8_0"): 1.16, ("llama.cpp", "F32"): 1.02},
    )
    _, rows = answer_table([section(bench)], 0.01)
    answers = {question: answer for question, answer, _ in rows}
    numpy = answers["fastest decode, numpy"]
    assert numpy.startswith("F32: 10.0 ± 0.3 t/s (tg32), 90% of its bandwidth roofline (bytes read: its float32")
    assert numpy.endswith("above 100% of the roofline (probe and bench disagree: measure again): Q8_0 116%")
    assert answers["fastest decode, llama.cpp"].startswith("no row steady enough")
    assert "102%" not in answers["fastest decode, llama.cpp"].split(";")[0]


def test_the_speed_choice_is_data_a_tie_a_noisy_row_and_an_impossible_share_each_in_its_place():
    from qwen3repro.report.answers import choose_speed

    bench = bench_rows(
        {("numpy", "F32"): (10.0, 0.4), ("numpy", "Q8_0"): (9.5, 0.3), ("numpy", "Q4_K_M"): (30.0, 6.0),
         ("numpy", "Q2_K"): (12.0, 0.3), ("numpy", "Q6_K"): (3.0, 0.1)},
        shares={("numpy", "Q2_K"): 1.2},
    )  # fmt: skip
    choice = choose_speed(bench)
    assert (choice["type"], choice["test"]) == ("F32", "tg32")
    assert [t for t, *_ in choice["tied"]] == ["Q8_0"] and [t for t, *_ in choice["noisy"]] == ["Q4_K_M"]
    assert choice["over"] == [("Q2_K", 1.2)]
    assert choose_speed(bench_rows({("numpy", "F32"): (10.0, 3.0)})) is None


def test_speeds_within_each_others_noise_are_named_as_a_tie_not_ranked():
    bench = bench_rows({("numpy", "F32"): (10.0, 0.4), ("numpy", "Q8_0"): (9.5, 0.3), ("numpy", "Q2_K"): (8.0, 0.3)})
    _, rows = answer_table([section(bench)], 0.01)
    answer = {question: answer for question, answer, _ in rows}["fastest decode, numpy"]
    assert "within noise of it: Q8_0 9.5 ± 0.3" in answer and "Q2_K" not in answer


def test_the_speed_plot_leaves_out_noisy_bars():
    plt = figures.pyplot()
    drawn = []
    original = plt.Axes.barh

    def spy(self, y, width, *args, **kwargs):
        drawn.append(width)
        return original(self, y, width, *args, **kwargs)

    plt.Axes.barh = spy
    try:
        png = speed_figures.speed(bench_rows({("numpy", "F32"): (10.0, 0.5), ("numpy", "Q4_K_M"): (30.0, 6.0)}))
    finally:
        plt.Axes.barh = original
    assert png.startswith(b"\x89PNG") and drawn == [10.0]


def test_the_memory_answer_picks_the_least_loss_file_that_fits_each_budget_per_engine_with_its_speed():
    from qwen3repro.report.answers import choose_memory, memory_answers

    trained = ModelSection(
        name="small",
        manifest={},
        hf_config={},
        n_parameters=1,
        tokenizer={},
        types=pd.DataFrame(
            {
                "type": ["F32", "Q8_0", "Q4_K_M", "Q2_K"],
                "kld_mean": [0.0, 4e-5, 2e-4, 1.2e-3],
                "llama.cpp kld_mean": [0.0, 1.2e-4, 3.6e-4, 1.5e-3],
            }
        ),
        bench=pd.DataFrame(),
    )
    peaks = {"F32": 2.4e9, "Q8_0": 0.75e9, "Q4_K_M": 0.51e9, "Q2_K": 0.42e9}
    speeds = {"F32": 9.0, "Q8_0": 20.0, "Q4_K_M": 25.0, "Q2_K": 27.0}
    bench = pd.DataFrame(
        [
            {"engine": e, "model_type": t, "test": "tg32", "n_prompt": 0, "n_gen": 32, "n_depth": 0,
             "avg_ts": speeds[t], "peak_rss_bytes": peak if e == "llama.cpp" else 2.41e9}
            for e in ("numpy", "llama.cpp") for t, peak in peaks.items()
        ]
        # a slower decode at a depth is not the file's speed
        + [{"engine": "llama.cpp", "model_type": "Q8_0", "test": "tg32 @ d512", "n_prompt": 0, "n_gen": 32,
            "n_depth": 512, "avg_ts": 5.0, "peak_rss_bytes": 0.75e9}]
        # the low-memory mode streams the file: every type fits a small budget, slowly
        + [{"engine": "numpy-low-memory", "model_type": t, "test": "tg4", "n_prompt": 0, "n_gen": 4, "n_depth": 0,
            "avg_ts": ts, "peak_rss_bytes": 0.3e9} for t, ts in (("F32", 0.31), ("Q4_K_M", 0.2))]
    )  # fmt: skip
    shape = section(bench)
    llama_rows = bench[bench["engine"] == "llama.cpp"]
    klds = {("llama.cpp", t): k for t, k in zip(trained.types["type"], trained.types["llama.cpp kld_mean"])}
    picks = choose_memory(llama_rows, "llama.cpp", klds, [(0.3, "0.3 GB"), (1, "1 GB"), (4, "4 GB")])
    assert [(p["type"], p["kld"] is not None, p["speed"]) for p in picks] == [
        ("Q2_K", False, 27.0),  # nothing fits: the smallest, named
        ("Q8_0", True, 20.0),  # the least loss that fits; its speed at depth 0, not 512
        ("F32", True, 9.0),
    ]
    answers = {q: a for q, a, _ in memory_answers([trained, shape], machine_gb=24)}
    llama = answers["best file that fits in memory, llama.cpp"]
    # neighbouring budgets with the same pick say it once
    assert llama.startswith("1–2 GB: Q8_0 (0.75 GB, KLD 0.00012, 20 t/s decode); 4 GB to this machine's 24 GB: F32")
    assert "F32 (2.40 GB, KLD 0, 9 t/s decode)" in llama and llama.count("Q8_0") == 1
    assert "KLD of small's file of that type" in llama
    # the NumPy engine holds every type in float32: nothing fits 1 or 2 GB, and F32 is its best above
    numpy = answers["best file that fits in memory, numpy"]
    assert numpy.startswith("1–2 GB: none (the smallest, F32, peaks at 2.41 GB); 4 GB to this machine's 24 GB: F32")
    assert "F32 (2.41 GB, KLD 0, 9 t/s decode)" in numpy
    # ... where its low-memory mode runs F32 in every budget, at its own speed
    low = answers["best file that fits in memory, numpy-low-memory"]
    assert low.startswith("1 GB to this machine's 24 GB: F32 (0.30 GB, KLD 0, 0.31 t/s decode) (")
    # a machine smaller than a budget sits between the budgets
    answers = {q: a for q, a, _ in memory_answers([trained, shape], machine_gb=3)}
    llama = answers["best file that fits in memory, llama.cpp"]
    assert llama.startswith("1–2 GB: Q8_0 (0.75 GB, KLD 0.00012, 20 t/s decode); this machine's 3 GB to 8 GB: F32")
