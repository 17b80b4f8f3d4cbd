"""The perplexity and tasks stages scattered in part jobs: F32 computed once per part, every file
type compared with it, and the gathered figures those of one job scoring everything."""

import pytest

from qwen3repro.accuracy.perplexity_parts import gather_perplexity, part_range, score_part, write_part
from qwen3repro.errors import UserError
from qwen3repro.pipeline.parts import by_runtime, part_files


def held_out_text() -> str:
    from qwen3repro.model import shakespeare

    _, held_out = shakespeare.split()
    return next(iter(held_out.values()))[:30_000]


@pytest.fixture(scope="module")
def tiny_q4(tiny_model, tmp_path_factory):
    from qwen3repro.convert.converter import convert

    path = tmp_path_factory.mktemp("q4") / "qwen3-tiny-Q4_K_M.gguf"
    convert(tiny_model, "Q4_K_M", path, name="qwen3-tiny")
    return path


def test_parts_cover_every_chunk_once_in_order_with_sizes_differing_by_at_most_one():
    for n in (0, 1, 5, 16, 17):
        for parts in (1, 3, 4, 8):
            ranges = [part_range(n, k, parts) for k in range(parts)]
            assert [i for r in ranges for i in r] == list(range(n))
            assert max(map(len, ranges)) - min(map(len, ranges)) <= 1
    with pytest.raises(UserError, match="part 4 of 4"):
        part_range(10, 4, 4)


def test_part_files_are_read_back_per_runtime_in_part_order():
    files = part_files("results/perplexity/m/parts", ["numpy", "llama.cpp"], 11)
    assert by_runtime(list(reversed(files))) == {
        "numpy": [f"results/perplexity/m/parts/numpy-{k}.npz" for k in range(11)],
        "llama.cpp": [f"results/perplexity/m/parts/llama.cpp-{k}.npz" for k in range(11)],
    }


@pytest.mark.parametrize("runtimes", [("numpy",), pytest.param(("numpy", "llama.cpp"), marks=pytest.mark.peers)])
def test_perplexity_gathered_from_uneven_parts_is_one_jobs_figures_bit_for_bit(tiny_f32, tiny_q4, tmp_path, runtimes):
    """Five chunks in three parts (as part_range cuts them), GROUP forced below a part's size so that
    a part loads each file twice: the same floats as perplexity_and_kld in one pass."""
    if "llama.cpp" in runtimes:
        pytest.importorskip("llama_cpp", reason="the peers extra (llama-cpp-python) is not installed")
    import qwen3repro.accuracy.perplexity_parts as parts_module
    from qwen3repro.accuracy.perplexity import perplexity_and_kld

    settings = {"n_ctx": 64, "chunks": 5, "parts": 3}
    ggufs = {"F32": tiny_f32, "Q4_K_M": tiny_q4}
    parts = {runtime: [tmp_path / f"{runtime}-{k}.npz" for k in range(3)] for runtime in runtimes}
    with pytest.MonkeyPatch.context() as m:
        m.setattr(parts_module, "GROUP", 1)
        for runtime, files in parts.items():
            for k, f in enumerate(files):
                write_part(f, score_part(ggufs, tiny_f32, held_out_text(), settings, runtime, k, 3))
    for file_type, gguf in ggufs.items():
        one = perplexity_and_kld(gguf, tiny_f32, held_out_text(), 64, 5, runtimes)
        out = tmp_path / f"{file_type}.json"
        gathered = gather_perplexity(parts, out, settings, "m", file_type, gguf, tiny_f32)
        assert {k: gathered[k] for k in one} == one
    assert gathered["kld"]["kld_mean"] > 0  # Q4_K_M: not F32 compared with itself


def test_a_part_made_for_other_file_types_is_refused(tiny_f32, tmp_path):
    settings = {"n_ctx": 64, "chunks": 2, "parts": 1}
    write_part(
        tmp_path / "numpy-0.npz", score_part({"F32": tiny_f32}, tiny_f32, held_out_text(), settings, "numpy", 0, 1)
    )
    with pytest.raises(UserError, match="no positions of Q8_0"):
        gather_perplexity({"numpy": [tmp_path / "numpy-0.npz"]}, tmp_path / "o.json", settings, "m", "Q8_0", "x", "y")
    assert not (tmp_path / "o.json").exists()


@pytest.mark.parametrize("runtime", ["numpy", pytest.param("llama.cpp", marks=pytest.mark.peers)])
def test_tasks_gathered_from_parts_are_one_jobs_results(tiny_f32, tiny_q4, tmp_path, runtime):
    """Every set's accuracy, flips and answer KLD, and the KLD along generations, as run_tasks gives them."""
    if runtime == "llama.cpp":
        pytest.importorskip("llama_cpp", reason="the peers extra (llama-cpp-python) is not installed")
    import json

    import qwen3repro.accuracy.task_parts as task_parts
    from qwen3repro.accuracy.task_data import build_blanks, build_tasks
    from qwen3repro.accuracy.task_formats import write_tasks
    from qwen3repro.accuracy.task_run import run_tasks
    from qwen3repro.engine.generate import Generator

    text = held_out_text()
    write_tasks(build_tasks(text, 4), tmp_path / "next.txt", "hellaswag")
    write_tasks(build_blanks(text, 5), tmp_path / "blank.csv", "winogrande")
    sets = {"next": (str(tmp_path / "next.txt"), "hellaswag"), "blank": (str(tmp_path / "blank.csv"), "winogrande")}
    generator = Generator.from_gguf(tiny_f32, n_ctx=256)
    prompt = generator.chat_prompt([{"role": "user", "content": "Speak."}], thinking=True)
    close = generator.tokenizer.encode("</think>", parse_special=True)[0]
    answer = generator.tokenizer.encode(text[:200], parse_special=False)[:11]
    generations = [
        {"prompt_tokens": prompt, "tokens": answer[:6] + [close] + answer[6:], "thinking": True,
         "spans": ["thinking"] * 7 + ["answer"] * (len(answer) - 6)},
        {"prompt_tokens": prompt, "tokens": [], "thinking": False, "spans": []},
        {"prompt_tokens": prompt, "tokens": answer, "thinking": False, "spans": ["answer"] * len(answer)},
    ]  # fmt: skip
    (tmp_path / "generations.json").write_text(json.dumps({"generations": generations}))
    settings = {"n_ctx": 128, "runtimes": [runtime], "parts": 2}
    ggufs = {"F32": tiny_f32, "Q4_K_M": tiny_q4}
    files = []
    with pytest.MonkeyPatch.context() as m:
        m.setattr(task_parts, "GROUP", 2)  # groups inside a part, as a large set has them
        for k in range(2):
            files.append(tmp_path / f"{runtime}-{k}.npz")
            arrays = task_parts.run_task_part(
                ggufs, tiny_f32, sets, settings, runtime, k, 2, tmp_path / "generations.json"
            )
            write_part(files[-1], arrays)
    for file_type, gguf in ggufs.items():
        one = run_tasks(gguf, tiny_f32, sets, settings, tmp_path / "generations.json")
        out = tmp_path / f"{file_type}.json"
        gathered = task_parts.gather_tasks(
            {runtime: files}, sets, out, "m", file_type, gguf, tiny_f32, tmp_path / "generations.json"
        )
        assert gathered["runtimes"] == one
    assert one[runtime]["generated"]["thinking"]["kld_mean"] > 0


def test_a_task_part_holds_fewer_rows_the_more_parts_and_the_shorter_the_endings(tmp_path):
    """The cost model's measure of a task part (held_rows): a group of items' endings after their
    common prefix, at most GROUP items, so a part of few items asks for little memory."""
    from qwen3repro.accuracy.task_data import build_blanks, build_tasks
    from qwen3repro.accuracy.task_formats import write_tasks
    from qwen3repro.accuracy.task_parts import GROUP, held_rows

    text = held_out_text()
    write_tasks(build_tasks(text, 2 * GROUP), tmp_path / "next.txt", "hellaswag")
    write_tasks(build_blanks(text, 2 * GROUP), tmp_path / "blank.csv", "winogrande")
    next_line, blank = tmp_path / "next.txt", tmp_path / "blank.csv"
    assert held_rows([next_line], 1) == held_rows([next_line], 2) > held_rows([next_line], 8) > 0
    assert held_rows([next_line], 1) > held_rows([blank], 1) > 0
    assert held_rows([next_line, blank], 1) == held_rows([next_line], 1) and held_rows([], 1) == 0
