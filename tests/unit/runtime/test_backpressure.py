import pytest

from pipeline.runtime.backpressure import BatchWindow


def test_the_window_bounds_batches_in_flight_and_follows_its_size():
    window = BatchWindow(2)
    assert [window.acquire() for _ in range(3)] == [True, True, False]  # full: the caller waits
    window.release()
    assert window.acquire() and window.peak_in_flight == 2
    window.size = 3  # a video opened: one more
    assert window.acquire() and not window.acquire()
    assert window.in_flight == window.peak_in_flight == 3


def test_a_release_without_a_slot_is_a_bug_and_a_window_has_room():
    with pytest.raises(RuntimeError):
        BatchWindow(1).release()
    with pytest.raises(ValueError):
        BatchWindow(0)
