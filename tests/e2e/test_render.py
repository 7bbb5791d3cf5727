"""``python -m pipeline render``: the stored boxes drawn on the source video, nothing else."""

from __future__ import annotations

import logging

import cv2
import numpy as np
import pytest

from pipeline.cli.main import main
from pipeline.inference.detections import BatchResult, Detections
from pipeline.media.decode import VideoDecoder
from pipeline.media.samples import write_video
from pipeline.media.source import describe
from pipeline.output.manifest import Manifest, VideoRecord
from pipeline.output.readers import read_detections
from pipeline.output.writer import VideoResultWriter
from pipeline.views.render import BoxPainter, pick_encoder, render

CHANGED = 48  # max channel difference that counts as drawn; re-encoding noise stays under ~30 here
FAR_PX = 150  # labels reach past a narrow box's edge; nothing is drawn farther than this from a box


def decoded(path) -> tuple[list[np.ndarray], list[float]]:
    frames, stamps = [], []
    for _, ts, image in VideoDecoder(str(path)).frames():
        frames.append(image)
        stamps.append(ts)
    return frames, stamps


def outline_mask(shape, boxes: np.ndarray) -> np.ndarray:
    mask = np.zeros(shape[:2], np.uint8)
    for x1, y1, x2, y2 in np.round(boxes).astype(int):
        cv2.rectangle(mask, (x1, y1), (x2, y2), 255, 1)
    return mask


@pytest.fixture(scope="module")
def run_output(ray_local, tmp_path_factory, clips, model_path):
    clip = clips["short_1080p"]  # 24 frames of people.mp4, 1080p
    out = tmp_path_factory.mktemp("render") / "out"
    assert (
        main(
            [
                "run",
                str(clip),
                "--output",
                str(out),
                "--model",
                str(model_path),
                "--device",
                "cpu",
                "--track",
                "--no-progress",
            ]
        )
        == 0
    )
    return clip, out


@pytest.mark.slow  # a real run (Ray)
def test_render_draws_the_stored_boxes_and_nothing_else(run_output, tmp_path):
    clip, out = run_output
    video = tmp_path / "boxes.mp4"
    assert (
        main(["render", str(clip), "--results", str(out), "--output", str(video), "--no-progress"])
        == 0
    )
    source, source_ts = decoded(clip)
    rendered, rendered_ts = decoded(video)
    assert len(rendered) == len(source) == 24
    assert rendered[0].shape == source[0].shape == (1080, 1920, 3)
    assert np.allclose(rendered_ts, source_ts, atol=1e-3)
    boxes = read_detections(out)
    assert len(boxes) > 300 and boxes["track_id"].notna().any()
    for index, (before, after) in enumerate(zip(source, rendered)):
        xyxy = boxes.loc[boxes["frame_index"] == index, ["x1", "y1", "x2", "y2"]].to_numpy()
        changed = np.abs(before.astype(int) - after.astype(int)).max(axis=2) > CHANGED
        outline = outline_mask(before.shape, xyxy)
        distance = cv2.distanceTransform(255 - outline, cv2.DIST_L2, 3)
        assert changed[outline > 0].mean() > 0.95, f"frame {index}: box edges not drawn"
        assert not changed[distance > FAR_PX].any(), (
            f"frame {index}: pixels changed far from every box"
        )


@pytest.mark.slow  # a real run (Ray)
def test_time_range_class_and_confidence_filters(run_output, tmp_path):
    clip, out = run_output
    video = tmp_path / "people.mp4"
    summary = render(
        str(clip),
        out,
        video,
        start_s=0.2,
        end_s=0.5,
        classes=["person"],
        min_confidence=0.5,
        progress=False,
    )
    frames, stamps = decoded(video)
    boxes = read_detections(out)
    wanted = boxes[
        (boxes["timestamp_s"] >= 0.2)
        & (boxes["timestamp_s"] <= 0.5)
        & (boxes["class_name"] == "person")
        & (boxes["confidence"] >= 0.5)
    ]
    assert len(frames) == summary.frames == 10  # frames 6..15 at 30 fps
    assert summary.boxes_drawn == len(wanted) > 0
    assert summary.frames_held == 0


@pytest.mark.slow  # a real run (Ray)
def test_unknown_video_is_a_usage_error(run_output, tmp_path, capsys):
    _, out = run_output
    other = tmp_path / "other.mp4"
    write_video(other, [np.zeros((64, 64, 3), np.uint8)] * 2)
    assert (
        main(["render", str(other), "--results", str(out), "--output", str(tmp_path / "x.mp4")])
        == 2
    )
    assert "no results for" in capsys.readouterr().err


def stride_3_result(tmp_path):
    """A 12-frame video and a result of its frames 0, 3, 6, 9, one box each (no Ray)."""
    video = tmp_path / "square.mp4"
    frames = [np.full((240, 320, 3), 90, np.uint8) for _ in range(12)]
    write_video(video, frames)
    source = describe(str(video))
    out = tmp_path / "out"
    writer = VideoResultWriter(out, source.video_id, {0: "person"})
    processed = np.arange(0, 12, 3)
    xyxy = np.array(
        [[40 + 20 * k, 60, 120 + 20 * k, 200] for k in range(len(processed))], np.float32
    )
    writer.add(
        BatchResult(
            source.video_id,
            0,
            processed,
            processed / 30,
            np.ones(4),
            Detections(xyxy, np.full(4, 0.9), np.zeros(4)),
        )
    )
    writer.commit()
    manifest = Manifest(out)
    manifest.update(VideoRecord(source.video_id, source.path, "ok", frames_processed=4))
    manifest.save()
    return video, out, xyxy


def test_frames_between_processed_ones_hold_the_last_boxes(tmp_path):
    """A stride-3 result: frames 1, 2, 4, 5, ... show the boxes of frames 0, 3, ..., marked held."""
    video, out, xyxy = stride_3_result(tmp_path)
    summary = render(str(video), out, tmp_path / "held.mp4", progress=False)
    assert (summary.frames, summary.frames_with_results, summary.frames_held) == (12, 4, 8)
    rendered, _ = decoded(tmp_path / "held.mp4")
    for index, image in enumerate(rendered):
        box = xyxy[index // 3]
        changed = np.abs(image.astype(int) - 90).max(axis=2) > CHANGED
        outline = outline_mask(image.shape, box[None])
        drawn = changed[outline > 0].mean()
        if index % 3 == 0:
            assert drawn > 0.9, f"frame {index}: its own box not drawn"
        else:  # the box of the last processed frame, dashed: about half its outline
            assert 0.3 < drawn < 0.8, (
                f"frame {index}: box of frame {index // 3 * 3} not drawn dashed ({drawn:.2f})"
            )


def test_a_render_that_fails_midway_leaves_the_previous_file_and_no_partial_one(
    tmp_path, monkeypatch
):
    video, out, _ = stride_3_result(tmp_path)
    target = tmp_path / "boxes.mp4"
    target.write_bytes(b"an earlier render")
    calls = []

    def fail_on_the_fifth_frame(self, frame, boxes, *, held=False):
        calls.append(1)
        if len(calls) == 5:
            raise RuntimeError("disk full")

    monkeypatch.setattr(BoxPainter, "draw", fail_on_the_fifth_frame)
    with pytest.raises(RuntimeError, match="disk full"):
        render(str(video), out, target, progress=False)
    assert target.read_bytes() == b"an earlier render"
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "boxes.mp4",
        "out",
        "square.mp4",
    ]  # no temporary file


def test_without_h264_it_falls_back_to_mpeg4_and_says_so(monkeypatch, caplog):
    import av

    real = av.codec.Codec

    def no_x264(name, mode="r"):
        if name == "libx264":
            raise av.codec.codec.UnknownCodecError(name)
        return real(name, mode)

    monkeypatch.setattr(av.codec, "Codec", no_x264)
    with caplog.at_level(logging.WARNING):
        assert pick_encoder() == "mpeg4"
    assert "H.264" in caplog.text


def test_rotated_video_is_rendered_upright_with_boxes_in_display_pixels(tmp_path):
    """Boxes are stored in display orientation; render decodes with the same rotation."""
    video = tmp_path / "rotated.mp4"
    write_video(video, [np.full((240, 320, 3), 90, np.uint8)] * 6, rotation=90)  # coded 320x240
    source = describe(str(video))
    decoder = VideoDecoder(str(video))
    width, height = decoder.info.width, decoder.info.height
    assert (width, height) == (240, 320)  # displayed portrait
    out = tmp_path / "out"
    writer = VideoResultWriter(out, source.video_id, {0: "person"})
    box = np.array([[30, 200, 200, 300]], np.float32)  # only fits the portrait frame
    idx = np.arange(6)
    writer.add(
        BatchResult(
            source.video_id,
            0,
            idx,
            idx / 30,
            np.ones(6),
            Detections(np.repeat(box, 6, 0), np.full(6, 0.9), np.zeros(6)),
        )
    )
    writer.commit()
    manifest = Manifest(out)
    manifest.update(VideoRecord(source.video_id, source.path, "ok", frames_processed=6))
    manifest.save()
    render(str(video), out, tmp_path / "upright.mp4", progress=False)
    frames, _ = decoded(tmp_path / "upright.mp4")
    assert frames[0].shape == (320, 240, 3)
    changed = np.abs(frames[0].astype(int) - 90).max(axis=2) > CHANGED
    assert changed[outline_mask(frames[0].shape, box) > 0].mean() > 0.9


# ---- labels ----------------------------------------------------------------------------------


def assert_tabs_inside_and_apart(tabs, width, height):
    from pipeline.views.render import _overlaps

    for tab in tabs:
        x1, y1, x2, y2 = tab
        assert 0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height, tab
    for i, a in enumerate(tabs):
        for b in tabs[i + 1 :]:
            assert not _overlaps(a, b), (a, b)


@pytest.mark.slow  # a real run (Ray)
def test_labels_of_a_crowded_frame_stay_inside_and_never_overlap(run_output):
    """The busiest frame of people.mp4 as the run stored it: every box keeps a readable label."""
    clip, out = run_output
    boxes = read_detections(out)
    busiest = boxes.groupby("frame_index").size().idxmax()
    crowd = boxes[boxes["frame_index"] == busiest].to_dict("records")
    assert len(crowd) >= 12
    frames, _ = decoded(clip)
    frame = frames[int(busiest)].copy()
    painter = BoxPainter(frame.shape[1], frame.shape[0])
    painter.draw(frame, crowd)
    tabs = painter.last_tabs
    assert all(tab is not None for tab in tabs)  # room for every label
    assert_tabs_inside_and_apart(tabs, frame.shape[1], frame.shape[0])
    for box, tab in zip(crowd, tabs):  # each tab is filled with its box's colour (text aside)
        x1, y1, x2, y2 = tab
        colour = np.array(BoxPainter.color(box["class_id"], box["track_id"]))
        share = (np.abs(frame[y1:y2, x1:x2].astype(int) - colour).max(axis=2) <= 2).mean()
        assert share > 0.5, (box, tab, share)
    # The same crowd drawn on a quarter-size frame: labels that do not fit are left out, never stacked.
    small = np.zeros((frame.shape[0] // 4, frame.shape[1] // 4, 3), np.uint8)
    shrunk = [dict(b, **{k: b[k] / 4 for k in ("x1", "y1", "x2", "y2")}) for b in crowd]
    painter = BoxPainter(small.shape[1], small.shape[0])
    painter.font_scale = 0.8  # labels far too big for the frame
    painter.draw(small, shrunk)
    placed = [tab for tab in painter.last_tabs if tab is not None]
    assert placed and len(placed) <= len(shrunk)
    assert_tabs_inside_and_apart(placed, small.shape[1], small.shape[0])


@pytest.mark.parametrize(
    "boxes",
    [
        [(100, 100, 200, 300)] * 30,  # one spot, many boxes
        [(-40, -10, 60, 50), (1880, 1050, 1990, 1100), (0, 0, 1920, 1080)],  # past every edge
        [
            (x, 5, x + 40, 60) for x in range(0, 1900, 30)
        ],  # a row along the top edge, tabs wider than boxes
    ],
)
def test_place_labels_keeps_tabs_in_the_frame_and_apart(boxes):
    from pipeline.views.render import place_labels

    tabs = place_labels(boxes, [(150, 28)] * len(boxes), 1920, 1080)
    assert all(tab is not None for tab in tabs)
    assert_tabs_inside_and_apart(tabs, 1920, 1080)


def test_label_text_is_dark_on_light_tabs_and_light_on_dark_ones():
    from pipeline.views.render import PALETTE, text_color

    assert text_color((0, 255, 255)) == (0, 0, 0)  # yellow (BGR)
    assert text_color((10, 249, 72)) == (0, 0, 0)  # lime
    assert text_color((147, 69, 52)) == (255, 255, 255)  # dark blue
    assert {text_color(c) for c in PALETTE} == {(0, 0, 0), (255, 255, 255)}
