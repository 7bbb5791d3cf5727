import numpy as np
import pytest
import torch
from ultralytics.data.augment import LetterBox
from ultralytics.utils.ops import scale_boxes

from pipeline.media.letterbox import LetterboxGeometry

SHAPES = [
    (1080, 1920),
    (720, 1280),
    (480, 640),
    (1920, 1080),
    (481, 639),
    (17, 33),
    (640, 640),
    (3000, 20),
]


@pytest.mark.parametrize("src_h, src_w", SHAPES)
@pytest.mark.parametrize("rect", [True, False])
def test_letterbox_matches_ultralytics_pixel_for_pixel(src_h, src_w, rect):
    rng = np.random.default_rng(src_h * src_w)
    image = rng.integers(0, 256, (src_h, src_w, 3), dtype=np.uint8)
    expected = LetterBox((640, 640), auto=rect, stride=32)(image=image)
    geometry = LetterboxGeometry.for_source(src_h, src_w, 640, stride=32, rect=rect)
    got = geometry.apply(image)
    assert got.shape == expected.shape == (geometry.out_h, geometry.out_w, 3)
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("src_h, src_w", SHAPES)
def test_boxes_to_source_matches_scale_boxes(src_h, src_w):
    geometry = LetterboxGeometry.for_source(src_h, src_w, 640, rect=True)
    rng = np.random.default_rng(1)
    xy = rng.uniform(0, [geometry.out_w, geometry.out_h], (50, 2))
    wh = rng.uniform(1, 200, (50, 2))
    boxes = torch.tensor(np.concatenate([xy, xy + wh], 1), dtype=torch.float32)
    expected = scale_boxes(geometry.out_shape, boxes.clone(), (src_h, src_w))
    got = geometry.boxes_to_source(boxes.clone())
    torch.testing.assert_close(got, expected)


def test_rect_pads_only_to_the_stride():
    g = LetterboxGeometry.for_source(1080, 1920, 640, rect=True)
    assert (g.out_h, g.out_w, g.new_h, g.top) == (384, 640, 360, 12)
    square = LetterboxGeometry.for_source(1080, 1920, 640, rect=False)
    assert square.out_shape == (640, 640)


def test_wrong_frame_size_is_refused():
    g = LetterboxGeometry.for_source(100, 200, 640)
    with pytest.raises(ValueError, match="geometry expects 200x100"):
        g.apply(np.zeros((100, 201, 3), np.uint8))
