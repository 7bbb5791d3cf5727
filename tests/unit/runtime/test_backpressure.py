import pytest

from pipeline.runtime.backpressure import DispatchWindow


def test_least_loaded_actor_gets_the_next_batch():
    w = DispatchWindow(3, 2)
    picks = [w.acquire() for _ in range(6)]
    assert sorted(picks) == [0, 0, 1, 1, 2, 2]
    assert picks[:3] == [0, 1, 2]  # spread before stacking
    assert w.acquire() is None  # every window full: the caller must wait
    w.release(1)
    assert w.acquire() == 1


def test_total_in_flight_never_exceeds_the_limit():
    w = DispatchWindow(2, 3)
    for _ in range(50):
        w.acquire()
    assert w.total_in_flight == w.limit == 6
    assert w.peak_in_flight == 6


def test_unavailable_actor_is_skipped_until_it_answers():
    w = DispatchWindow(2, 1)
    w.set_available(0, False)
    assert w.acquire() == 1
    assert w.acquire() is None
    w.set_available(0, True)
    assert w.acquire() == 0


def test_double_release_is_a_bug():
    w = DispatchWindow(1, 1)
    with pytest.raises(RuntimeError):
        w.release(0)
