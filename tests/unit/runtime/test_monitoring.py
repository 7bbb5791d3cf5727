import pytest

from pipeline.runtime.monitoring import PeakRss, Timeline


def test_timeline_keeps_one_sample_per_interval():
    timeline = Timeline(interval_s=1.0)
    added = [timeline.add(t / 4, frames=t) for t in range(20)]  # every 0.25 s for 5 s
    assert sum(added) == 5
    assert [p["t_s"] for p in timeline.points] == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert timeline.points[1]["frames"] == 4


def test_timeline_stays_bounded_and_even_however_long_the_run():
    timeline = Timeline(interval_s=1.0, max_points=100)
    for t in range(100_000):
        timeline.add(float(t), frames=t)
    assert len(timeline.points) < 100
    gaps = {round(b["t_s"] - a["t_s"], 3) for a, b in zip(timeline.points, timeline.points[1:])}
    assert len(gaps) == 1  # evenly spaced after every thinning
    assert timeline.points[0]["t_s"] == 0.0 and timeline.points[-1]["t_s"] > 90_000


def test_timeline_rejects_a_useless_size():
    with pytest.raises(ValueError, match="max_points"):
        Timeline(max_points=1)


def test_peak_rss_tracks_start_warm_peak_last():
    memory = PeakRss()
    memory.mark_warm()
    held = bytearray(64 * 1024 * 1024)
    memory.sample()
    del held
    d = memory.as_dict()
    assert d["start_bytes"] > 0 and d["warm_bytes"] >= d["start_bytes"] - 16 * 1024 * 1024
    assert d["peak_bytes"] >= d["warm_bytes"] and d["peak_bytes"] >= d["last_bytes"]
