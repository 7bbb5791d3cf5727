import pytest

from pipeline.runtime.deadlines import BatchDeadline


@pytest.mark.parametrize(
    "fixed, observed, expected",
    [
        (None, [], 600.0),  # nothing measured yet: the warm-up allowance
        (None, [0.2, 0.5, 0.1], 30.0),  # fast batches: the floor
        (None, [0.2, 4.0, 0.3], 40.0),  # 10x the slowest batch
        (5.0, [], 5.0),  # a user's --batch-timeout wins
        (5.0, [100.0], 5.0),
    ],
)
def test_batch_deadline(fixed, observed, expected):
    deadline = BatchDeadline(fixed_s=fixed)
    for latency in observed:
        deadline.observe(latency)
    assert deadline.seconds() == expected


def test_batch_deadline_refuses_nonsense():
    with pytest.raises(ValueError):
        BatchDeadline(fixed_s=0)
