"""The report's settings table, Ray-free: which frames a run processed, in words."""

import pytest

from pipeline.views.report import _sampling_words


@pytest.mark.parametrize(
    "settings, words",
    [
        ({"stride": 1}, "every frame"),
        ({"stride": 5}, "1 frame in 5 (--stride)"),
        ({"stride": 1, "fps": 2.0}, "2 frames a second (--fps)"),
        ({"stride": 1, "keyframes": True}, "keyframes only (--keyframes)"),
        (
            {"stride": 1, "fps": 0.5, "keyframes": True},
            "keyframes, at most 0.5 a second (--keyframes --fps)",
        ),
    ],
)
def test_the_report_says_which_frames_were_processed(settings, words):
    assert _sampling_words(settings) == words
