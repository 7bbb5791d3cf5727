"""The fault plan's one-shot faults fire once across processes, however close together they ask."""

from __future__ import annotations

import multiprocessing as mp

from pipeline.runtime.faults import FaultPlan


def _claim(plan: FaultPlan, barrier, results) -> None:
    barrier.wait()  # all ask at the same moment, as two fast actors reaching batch N did
    results.put(plan._claim_once("hang"))


def test_a_one_shot_fault_is_claimed_by_exactly_one_process(tmp_path):
    plan = FaultPlan(marker_dir=str(tmp_path))
    ctx = mp.get_context("fork")
    barrier, results = ctx.Barrier(8), ctx.Queue()
    workers = [ctx.Process(target=_claim, args=(plan, barrier, results)) for _ in range(8)]
    for w in workers:
        w.start()
    claims = [results.get(timeout=30) for _ in workers]
    for w in workers:
        w.join()
    assert claims.count(True) == 1
    assert not plan._claim_once("hang")  # and never again
    assert list(tmp_path.glob("hang-*"))  # the marker the tests look for
