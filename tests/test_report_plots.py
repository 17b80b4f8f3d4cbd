"""The report's plots and answer table on made-up frames: labels never overlap, coinciding points are
labelled once, and a speed whose repetitions disagree by 10% or more is marked, never shown as a speed."""

import pandas as pd

from qwen3repro.report import figures
from qwen3repro.report.answers import answer_table
from qwen3repro.report.inputs import ModelSection
from qwen3repro.report.tables import speed_cell


def test_labels_of_crowded_points_do_not_overlap_and_coinciding_points_are_labelled_once():
    plt = figures._pyplot()
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


def bench_rows(samples: dict[tuple[str, str], tuple[float, float]]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "engine": engine,
                "model_type": t,
                "test": "tg32",
                "avg_ts": avg,
                "stddev_ts": sd,
                "ceiling_share": 0.5,
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


def test_the_speed_plot_leaves_out_noisy_bars():
    plt = figures._pyplot()
    drawn = []
    original = plt.Axes.barh

    def spy(self, y, width, *args, **kwargs):
        drawn.append(width)
        return original(self, y, width, *args, **kwargs)

    plt.Axes.barh = spy
    try:
        png = figures.speed(bench_rows({("numpy", "F32"): (10.0, 0.5), ("numpy", "Q4_K_M"): (30.0, 6.0)}))
    finally:
        plt.Axes.barh = original
    assert png.startswith(b"\x89PNG") and drawn == [10.0]
