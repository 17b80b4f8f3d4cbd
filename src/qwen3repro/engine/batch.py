"""Many generations at once: every sequence in flight advances by one token per forward pass.

Decoding one sequence reads every weight for each token, so it runs at the speed of memory. With B
sequences in one pass (Qwen3.decode) the weights are read once for B tokens, as serving engines do
(continuous batching): each sequence holds a lane (its own KV cache and positions), and a lane that
finishes takes the next waiting job at once, without waiting for the others.

A job is a Python generator that yields Requests and receives each one's Result: a single prompt
is a job of one request, a conversation a job of several, each turn on the lane's cache from the
last. A sequence gets bitwise the logits it gets alone (Qwen3.decode), and its draws come from its
own seeded sampler: its tokens are the ones it gets generated alone.
"""

from __future__ import annotations

from typing import Generator as PyGenerator
from typing import Iterable

from qwen3repro.engine.generate import Generator, Request, Result, Sequence

Job = PyGenerator[Request, Result, None]


def run_jobs(generator: Generator, jobs: Iterable[Job]) -> None:
    """Run every job to its end on the generator's lanes (as many sequences at once as it has)."""
    model = generator.model
    waiting = iter(jobs)
    active: dict[int, tuple[Job, Sequence]] = {}
    free = list(range(model.lanes))[::-1]

    def admit(lane: int, job: Job, result: Result | None) -> bool:
        """Start the job's next request on this lane: prefill, and the first token drawn at once, so
        that its time to first token is its own. False when the job has ended."""
        while True:
            try:
                request = job.send(result)
            except StopIteration:
                return False
            seq = Sequence(generator, request, lane)
            seq.start()
            seq.take()
            if not seq.stop_reason:
                active[lane] = (job, seq)
                return True
            result = seq.result()  # done at its first token: the job goes on at once

    while True:
        while free:
            job = next(waiting, None)
            if job is None:
                break
            lane = free.pop()
            if not admit(lane, job, None):
                free.append(lane)
        if not active:
            return
        # every sequence in flight has drawn a token that is not in its cache yet: one pass for all
        lanes = list(active)
        stepping = [active[lane][1] for lane in lanes]
        logits = model.decode([s.generated[-1] for s in stepping], lanes, [s.position for s in stepping])
        for lane, seq, row in zip(lanes, stepping, logits):
            seq.feed(row)
            seq.take()
            if seq.stop_reason:
                job = active.pop(lane)[0]
                if not admit(lane, job, seq.result()):
                    free.append(lane)


def generate_all(generator: Generator, requests: list[Request]) -> list[Result]:
    """The results of independent requests, in their order, run together on the generator's lanes."""
    results: list[Result | None] = [None] * len(requests)

    def job(i: int, request: Request) -> Job:
        results[i] = yield request

    run_jobs(generator, (job(i, r) for i, r in enumerate(requests)))
    return results
