"""The pipeline past one machine: through a real Slurm (sbatch, squeue) on this machine, on S3-compatible
object storage with no shared file system, and the cluster profiles' dry runs for the Qwen3 family.

One reduced pipeline on qwen3-tiny (two file types and an importance-matrix twin; every rule) runs
through Slurm and serves the Slurm assertions; a second, on object storage, runs the file types and
their checks and is compared with it. Both are held to the committed reference of qwen3-tiny, which a
local run made.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from helpers import BIN, REPO, SHORT_CHECK
from slurm_cluster import SlurmCluster, why_not

from qwen3repro.fsutil import sha256_file
from qwen3repro.pipeline.usage import by_rule, problems, usage_table

pytestmark = pytest.mark.cluster

# Every rule of the pipeline, on two file types and one twin, with short benchmarks and sweeps.
SMALL = {
    "convert": {"types": ["F32", "Q4_K_M"], "imatrix": {"types": ["Q4_K_M"], "chunks": 2, "n_ctx": 128}},
    "bench": {
        "types": ["Q4_K_M"],
        "engines": ["numpy", "llama.cpp", "transformers-f32"],
        "n_prompt": [16],
        "n_gen": [8],
        "repetitions": 2,
    },
    "perplexity": {"chunks": 2, "n_ctx": 128},
    "sweep": {"types": ["Q4_K_M"], "seeds": [0], "max_new_tokens": 8},
    "samples": {"max_new_tokens": 8},
    "check": SHORT_CHECK,
}
TINY = REPO / "config" / "qwen3-tiny.yaml"
FAMILY = ["qwen3-family", "qwen3-1.7b", "qwen3-4b", "qwen3-8b", "qwen3-14b", "qwen3-32b"]
FAMILY += [f"{c}-shape" for c in FAMILY[1:]]


def snakemake(workdir: Path, *args: str, env: dict | None = None, timeout: int = 1800):
    return subprocess.run(
        [str(BIN / "snakemake"), "-s", str(REPO / "Snakefile"), "-d", str(workdir), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "QWEN3REPRO_QUIET": "1", **(env or {})},
    )


def small_config(path: Path) -> Path:
    path.write_text(yaml.safe_dump(SMALL))
    return path


# --- Slurm ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def slurm_run(tmp_path_factory):
    reason = why_not()
    if reason:
        pytest.skip(f"no Slurm cluster here: {reason}")
    cluster = SlurmCluster(tmp_path_factory.mktemp("slurm"))
    cluster.start()
    try:
        workdir = tmp_path_factory.mktemp("slurm-run")
        proc = snakemake(
            workdir,
            "--profile",
            str(REPO / "profiles" / "slurm"),
            "--configfile",
            str(TINY),
            str(small_config(workdir / "small.yaml")),
            # this cluster keeps no accounting database: follow jobs with squeue (MinJobAge=3600)
            "--slurm-status-command",
            "squeue",
            "--slurm-no-account",
            "--slurm-init-seconds-before-status-checks",
            "5",
            "--slurm-keep-successful-logs",
        )
        yield workdir, proc, cluster
    finally:
        cluster.stop()


def slurm_jobs(workdir: Path) -> dict[str, Path]:
    """Each Slurm job id and the rule log of the job it ran, from the executor's per-job Slurm logs."""
    jobs = {}
    for slurm_log in (workdir / ".snakemake" / "slurm_logs").rglob("*.log"):
        rule_log = re.search(r"^\s+log: (results/logs/\S+\.log)", slurm_log.read_text(), re.M)
        assert rule_log, slurm_log
        jobs[slurm_log.stem] = workdir / rule_log.group(1)
    return jobs


def test_slurm_runs_the_pipeline_and_reproduces_the_local_run(slurm_run):
    workdir, proc, _ = slurm_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    verdict = json.loads((workdir / "results" / "verify" / "qwen3-tiny.json").read_text())
    assert verdict["verdict"] == "reproduced", verdict
    assert (workdir / "results" / "report" / "index.html").is_file()


def test_every_non_local_job_went_through_sbatch_asking_what_its_rule_declared(slurm_run):
    from qwen3repro.pipeline.usage import declared_of

    workdir, proc, cluster = slurm_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    localrules = set(
        yaml.safe_load((REPO / "src/qwen3repro/data/config.schema.yaml").read_text())["properties"]["cluster"][
            "properties"
        ]["localrules"]["default"]
    )
    records = {r["JobId"]: r for r in cluster.records()}
    jobs = slurm_jobs(workdir)
    assert set(jobs) == set(records)
    submitted = set()
    for job_id, rule_log in jobs.items():
        declared, record = declared_of(rule_log), records[job_id]
        tres = dict(item.split("=") for item in record["Tres"].split(","))
        mem_mb = float(tres["mem"][:-1]) * {"M": 1, "G": 1024, "T": 1024**2}[tres["mem"][-1]]
        assert record["JobState"] == "COMPLETED", record
        assert declared["rule"] not in localrules
        assert int(record["ProcCnt"]) == int(tres["cpu"]) == declared["threads"], (rule_log, record)
        assert mem_mb == declared["mem_mb"], (rule_log, record)
        assert int(record["TimeLimit"]) == declared["runtime"], (rule_log, record)
        submitted.add(rule_log)
    # and every job that is not a local rule was one of them
    for rule_log in (workdir / "results" / "logs").glob("*/*.log"):
        declared = declared_of(rule_log)
        assert (rule_log in submitted) == (declared["rule"] not in localrules), rule_log
    assert {declared_of(p)["rule"] for p in submitted} >= {"convert", "check", "perplexity", "bench_gguf", "sweep"}
    # Slurm's own account of the jobs, as `sacct -c` reads its completion records
    sacct = subprocess.run(
        ["sacct", "-c", "--parsable2", "-o", "JobID,JobName,State,Timelimit,NCPUS,Elapsed"],
        capture_output=True,
        text=True,
        check=True,
    )
    print(sacct.stdout)
    lines = sacct.stdout.strip().splitlines()[1:]
    assert len(lines) == len(records) and all("|COMPLETED|" in line for line in lines), sacct.stdout


def test_no_job_used_more_than_it_declared_or_asked_for_more_than_three_times_its_memory(slurm_run):
    workdir, proc, _ = slurm_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = usage_table(workdir / "results")
    print(by_rule(table).to_string(index=False))
    assert problems(table) == []


# --- object storage, no shared file system -------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """moto's S3-compatible server on loopback with one bucket; the settings Snakemake's S3 plugin takes."""
    port = _free_port()
    server = subprocess.Popen(
        [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    credentials = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1"}
    try:
        import boto3

        deadline = time.monotonic() + 30
        while True:
            try:
                client = boto3.client("s3", endpoint_url=endpoint, **_boto(credentials))
                client.create_bucket(Bucket="qwen3repro")
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        yield endpoint, client, credentials
    finally:
        server.terminate()
        server.wait(timeout=30)


def _boto(credentials: dict) -> dict:
    return {
        "aws_access_key_id": credentials["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": credentials["AWS_SECRET_ACCESS_KEY"],
        "region_name": credentials["AWS_DEFAULT_REGION"],
    }


def storage_args(endpoint: str, prefix: str) -> list[str]:
    return [
        "--default-storage-provider",
        "s3",
        "--default-storage-prefix",
        f"s3://qwen3repro/{prefix}",
        "--storage-s3-endpoint-url",
        endpoint,
    ]


def test_pipeline_on_object_storage_writes_everything_there_and_equals_the_local_run(s3, slurm_run, tmp_path):
    endpoint, client, credentials = s3
    slurm_workdir = slurm_run[0]
    targets = ["results/verify/qwen3-tiny.json", "results/check/qwen3-tiny.csv"]
    proc = snakemake(
        tmp_path,
        "--cores",
        "2",
        "--configfile",
        str(TINY),
        str(small_config(tmp_path / "small.yaml")),
        *storage_args(endpoint, "run"),
        "--",
        *targets,
        env=credentials,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    # nothing under results/ on the local disk: every output went to the bucket
    assert not (tmp_path / "results").exists()
    keys = {o["Key"] for o in client.list_objects_v2(Bucket="qwen3repro", Prefix="run/")["Contents"]}
    verdict = json.loads(
        client.get_object(Bucket="qwen3repro", Key="run/results/verify/qwen3-tiny.json")["Body"].read()
    )
    assert verdict["verdict"] == "reproduced", verdict
    ggufs = sorted(k for k in keys if k.endswith(".gguf") and "/gguf/" in k)
    assert len(ggufs) == 3, keys
    for key in ggufs:
        body = client.get_object(Bucket="qwen3repro", Key=key)["Body"].read()
        local = slurm_workdir / key.removeprefix("run/")
        assert hashlib.sha256(body).hexdigest() == sha256_file(local), key
    # the gate's figures too: the same single-threaded arithmetic on the same files
    checks = client.get_object(Bucket="qwen3repro", Key="run/results/check/qwen3-tiny.csv")["Body"].read()
    assert checks == (slurm_workdir / "results" / "check" / "qwen3-tiny.csv").read_bytes()


def test_kubernetes_profile_plans_the_pipeline_on_object_storage(s3, tmp_path):
    endpoint, _, credentials = s3
    proc = snakemake(
        tmp_path,
        "-n",
        "--profile",
        str(REPO / "profiles" / "kubernetes"),
        "--configfile",
        str(TINY),
        "--storage-s3-endpoint-url",
        endpoint,
        env=credentials,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert re.search(r"^total\s+\d+", proc.stdout, re.M), proc.stdout[-2000:]
    assert "s3://qwen3repro/runs/results/gguf/qwen3-tiny/qwen3-tiny-Q4_K_M.gguf" in proc.stdout


# --- the family on a cluster ---------------------------------------------------------------------


@pytest.mark.parametrize("config", FAMILY)
def test_slurm_profile_plans_each_family_config(config, tmp_path):
    proc = snakemake(
        tmp_path,
        "-n",
        "--profile",
        str(REPO / "profiles" / "slurm"),
        "--configfile",
        str(REPO / "config" / f"{config}.yaml"),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert re.search(r"^convert\s+\d+", proc.stdout, re.M), proc.stdout[-2000:]


def test_no_rule_takes_its_threads_from_the_core_count_and_every_rule_declares_its_resources():
    """Each job rule declares its threads, and takes its memory and time limit from its own entry in
    qwen3repro.pipeline.jobs.RULES or, with none there, from the default profile's default-resources (which
    Snakemake reads beside any --profile)."""
    from qwen3repro.pipeline.jobs import RULES

    defaults = yaml.safe_load((REPO / "profiles" / "default" / "config.yaml").read_text())["default-resources"]
    assert set(defaults) >= {"mem_mb", "runtime"}
    declared = set()
    for smk in sorted((REPO / "workflow" / "rules").glob("*.smk")) + [REPO / "Snakefile"]:
        text = smk.read_text()
        assert "workflow.cores" not in text, smk
        for rule in re.split(r"(?m)^(?=rule \w+:)", text)[1:]:
            name = rule.split(":", 1)[0].removeprefix("rule ")
            if "script:" not in rule:  # rule all: a target, not a job
                continue
            assert "threads:" in rule, f"{smk.name}: {name} declares no threads"
            if "resources:" in rule:
                assert f'**needs("{name}")' in rule, f"{smk.name}: {name} takes resources from another place"
                declared.add(name)
            else:
                assert name not in RULES, f"{smk.name}: {name} has an entry in jobs.RULES it does not use"
    assert declared == set(RULES), set(RULES) ^ declared
