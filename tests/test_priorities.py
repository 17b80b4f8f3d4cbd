"""Job priorities from the DAG: the longest chain waiting on a job, counted in jobs."""

from dataclasses import dataclass, field
from types import SimpleNamespace

from qwen3repro.pipeline.priorities import chain_lengths, chain_priority


@dataclass(eq=False)  # hashed by identity, as Snakemake's jobs
class FakeJob:
    rule: SimpleNamespace
    wildcards_dict: dict = field(default_factory=dict)


def fake_dag(edges: dict[str, list[str]]):
    """A DAG of jobs named "<rule>:<model>", `edges`: job -> the jobs that wait on it."""
    jobs = {}
    for name in set(edges) | {d for ds in edges.values() for d in ds}:
        rule, model = name.split(":")
        jobs[name] = FakeJob(SimpleNamespace(name=rule), {"model": model})
    depending = {jobs[n]: {jobs[d]: set() for d in edges.get(n, [])} for n in jobs}
    return SimpleNamespace(jobs=list(jobs.values()), depending=depending)


def test_a_long_chain_outranks_a_short_one_whatever_the_rules_are_called():
    dag = fake_dag(
        {
            "convert:m": ["imatrix:m", "check:m", "part:m"],
            "imatrix:m": ["convert_imat:m"],
            "convert_imat:m": ["part:m", "check:m"],
            "part:m": ["gather:m"],
            "gather:m": ["table:m"],
            "table:m": ["report:all"],
            "check:m": ["report:all"],
            "bench:shape": ["report:all"],
        }
    )
    lengths = chain_lengths(dag)
    rank = lambda job: lengths[(job.split(":")[0], frozenset({"model": job.split(":")[1]}.items()))]  # noqa: E731
    assert rank("report:all") == 0 and rank("bench:shape") == rank("check:m") == 1
    assert rank("part:m") == 3 and rank("imatrix:m") == 5 and rank("convert:m") == 6
    assert chain_priority(dag, "imatrix", {"model": "m"}) > chain_priority(dag, "check", {"model": "m"})
    assert chain_priority(None, "imatrix", {"model": "m"}) == chain_priority(dag, "gone", {"model": "m"}) == 0
