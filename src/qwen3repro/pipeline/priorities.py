"""Job priorities from the DAG itself: the longer the chain of jobs waiting on a job, the sooner it
runs, so that a long chain (training, conversion, the importance matrix, the imatrix files, the
scattered stages) is never left to the end on one core while short side jobs took the cores first.

Snakemake orders ready jobs by priority and has no notion of a critical path; a rule's `priority:`
may be a function of the job's wildcards, evaluated once the DAG is built. This reads that DAG
(`workflow.dag`, Snakemake's own) and counts the jobs on the longest path from the job to a target.
"""

from __future__ import annotations

from typing import Any


def chain_lengths(dag: Any) -> dict[tuple[str, frozenset], int]:
    """(rule, wildcards) -> the number of jobs on the longest chain that waits on that job."""
    depth: dict[Any, int] = {}

    def length(job) -> int:
        if job not in depth:
            depth[job] = 0  # a cycle cannot occur in a DAG; this only guards the recursion
            depth[job] = 1 + max((length(j) for j in dag.depending[job]), default=0)
        return depth[job]

    return {(job.rule.name, frozenset(job.wildcards_dict.items())): length(job) - 1 for job in dag.jobs}


_cache: dict[str, Any] = {"dag": None, "jobs": 0, "lengths": {}}


def chain_priority(dag: Any, rule: str, wildcards: dict) -> int:
    """The job's chain length (0 where there is no DAG yet, or the job is not in it)."""
    if dag is None:
        return 0
    jobs = len(dag.jobs)
    if _cache["dag"] is not dag or _cache["jobs"] != jobs:
        _cache.update(dag=dag, jobs=jobs, lengths=chain_lengths(dag))
    return _cache["lengths"].get((rule, frozenset(wildcards.items())), 0)
