"""The quick config's whole run, timed, with the 0.6B stand-in served as the real model: the time the
README quotes for `make run CONFIG=config/qwen3-0.6b-quick.yaml` on a machine without the Hub.

    python benchmarks/quick_config_standin.py --standin results/models/qwen3-0.6b-shape --workdir /tmp/quick

tests/hub_server.py serves, at the repositories, commits and file names the config pins:
  - the model: the stand-in's files (Qwen3-0.6B's architecture and config.json, its tokenizer and chat
    template, seeded random weights in bfloat16: the same shapes and bytes to download as the real one);
  - wikitext-2's test parquet: rows of the held-out Shakespeare works, wikitext's shape (a line a row);
  - ARC-Easy's test parquet: next-line questions from the same works, in ARC's columns.
Then `snakemake --cores 2 --configfile <config>` runs in `--workdir` (HF_ENDPOINT at the server, a fresh
HF_HOME), exactly as `make run CONFIG=...` does, and the script prints the elapsed time and the verdict.
Everything but the bytes served is the real run's: the same jobs, the same sizes, the same settings.
Random weights make the perplexity and accuracy figures meaningless; only the time and the verdict's
file checks (the download against the Hub's record) are the point.
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from hub_server import HubServer, Repo, parquet_of, serve_directory  # noqa: E402

ARC_ROWS = 200  # ARC-Easy's test split has 2,376; the quick config takes the first 50


def wikitext_rows(text: str):
    import pandas as pd

    return pd.DataFrame({"text": [line + "\n" for line in text.splitlines()]})


def arc_rows(text: str):
    import pandas as pd

    from qwen3repro.accuracy.task_data import build_tasks

    labels = ["A", "B", "C", "D"]
    tasks = build_tasks(text, ARC_ROWS)
    return pd.DataFrame(
        {
            "id": [f"standin-{i}" for i in range(len(tasks))],
            "question": [t.context for t in tasks],
            "choices": [{"text": list(t.endings), "label": labels[: len(t.endings)]} for t in tasks],
            "answerKey": [labels[t.gold] for t in tasks],
        }
    )


def repositories(config: dict, standin: Path) -> list[Repo]:
    from qwen3repro.accuracy.task_sets import active_sets
    from qwen3repro.model import shakespeare

    (name, model), *others = config["models"].items()
    if others or model["source"] != "hub":
        sys.exit(f"{name}: the config must name one Hub model")
    held_out = shakespeare.joined(shakespeare.split()[1])
    repo = serve_directory(standin, model["repo_id"])
    repo.commit = model["revision"]  # the pinned commit, as the real Hub answers it
    served = [repo]
    datasets: dict[str, tuple[str, dict[str, bytes]]] = {}
    corpus = config["perplexity"]["corpus"]
    if corpus["source"] == "hub":
        datasets.setdefault(corpus["repo_id"], (corpus["revision"], {}))[1][corpus["filename"]] = parquet_of(
            wikitext_rows(held_out)
        )
    for set_name, spec in active_sets(config["tasks"]).items():
        if spec["source"] != "hub":
            continue
        if spec["dataset"] != "arc":
            sys.exit(f"{set_name}: this script serves ARC rows only, not {spec['dataset']}")
        datasets.setdefault(spec["repo_id"], (spec["revision"], {}))[1][spec["filename"]] = parquet_of(
            arc_rows(held_out)
        )
    for repo_id, (revision, files) in datasets.items():
        dataset = Repo(repo_id, files, kind="dataset")
        dataset.commit = revision
        served.append(dataset)
    return served


def stage_times(benchmarks: Path) -> dict[str, dict]:
    """Per rule: its finished jobs, their wall seconds summed and the longest, from Snakemake's benchmark files."""
    stages = {}
    for rule in sorted(p for p in benchmarks.glob("*") if p.is_dir()):
        seconds = [float(f.read_text().splitlines()[-1].split("\t")[0]) for f in rule.glob("*.tsv")]
        if seconds:
            stages[rule.name] = {"jobs": len(seconds), "seconds": round(sum(seconds), 1), "longest": max(seconds)}
    return dict(sorted(stages.items(), key=lambda item: -item[1]["seconds"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--standin", type=Path, required=True, help="the stand-in's Hugging Face directory")
    parser.add_argument("--workdir", type=Path, required=True, help="an empty directory for the run")
    parser.add_argument("--config", type=Path, default=REPO / "config" / "qwen3-0.6b-quick.yaml")
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--limit-minutes", type=float, help="stop the run (and report what it did) after this long")
    args = parser.parse_args()
    from qwen3repro.config import load_config

    if args.workdir.exists() and any(args.workdir.iterdir()):
        sys.exit(f"{args.workdir}: not empty")
    args.workdir.mkdir(parents=True, exist_ok=True)
    config = load_config(args.config.resolve())
    with HubServer(repositories(config, args.standin)) as hub:
        env = os.environ | {
            "HF_ENDPOINT": hub.url,
            "HF_HOME": str(args.workdir / "hf-home"),
            "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        }
        command = [
            str(Path(sys.executable).parent / "snakemake"),
            "--snakefile", str(REPO / "Snakefile"),
            "--directory", str(args.workdir),
            "--cores", str(args.cores),
            "--configfile", str(args.config.resolve()),
            "--quiet", "host", "reason",
        ]  # fmt: skip
        started = time.perf_counter()
        proc = subprocess.Popen(command, env=env, cwd=args.workdir)
        try:
            proc.wait(timeout=args.limit_minutes * 60 if args.limit_minutes else None)
        except subprocess.TimeoutExpired:
            proc.terminate()  # Snakemake stops its jobs and keeps what is finished
            proc.wait()
            print(f"stopped at the limit of {args.limit_minutes} minutes")
        elapsed = time.perf_counter() - started
    verdicts = sorted((args.workdir / "results" / "verify").glob("*.json"))
    summary = {
        "config": str(args.config),
        "elapsed_s": round(elapsed, 1),
        "returncode": proc.returncode,
        "verdicts": [json.loads(p.read_text()).get("verdict") for p in verdicts],
    }
    summary["jobs_by_stage"] = stage_times(args.workdir / "results" / "benchmarks")
    print(json.dumps(summary, indent=1))
    print(f"{args.config.name} on the stand-in: {elapsed / 60:.1f} min, exit {proc.returncode}")
    sys.exit(proc.returncode)


if __name__ == "__main__":
    main()
