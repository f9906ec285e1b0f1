"""The pure pre/post-processing steps of PP-OCR, against hand-computed PaddleOCR results (no Paddle)."""

from __future__ import annotations

import numpy as np
import pytest

from models.ocr import OcrConfig
from models.text_detector import (
    DbParams,
    db_postprocess,
    det_resize,
    filter_det_boxes,
    get_mini_boxes,
    normalize_image,
    order_points_clockwise,
)
from models.text_recognizer import ctc_greedy_decode, get_rotate_crop_image, load_char_dict, resize_norm_img


@pytest.mark.parametrize("h, w, limit_type, expected", [
    (3508, 2480, "max", (960, 672)),  # 960/3508 -> 678.7 -> 678 -> round(21.2)*32
    (500, 700, "max", (512, 704)),  # under the limit: only rounded to 32
    (10, 10, "max", (32, 32)),  # never below 32
    (500, 700, "min", (960, 1344)),
    (500, 700, "resize_long", (672, 960)),
])
def test_det_resize(h, w, limit_type, expected):
    out, ratio_h, ratio_w = det_resize(np.zeros((h, w, 3), np.uint8), 960, limit_type)
    assert out.shape[:2] == expected
    assert ratio_h == pytest.approx(expected[0] / h) and ratio_w == pytest.approx(expected[1] / w)


def test_normalize_image_uses_imagenet_stats_on_channels_as_stored():
    img = np.zeros((2, 2, 3), np.uint8)
    img[..., 0] = 255
    out = normalize_image(img)
    assert out.shape == (3, 2, 2) and out.dtype == np.float32
    assert out[0, 0, 0] == pytest.approx((1 - 0.485) / 0.229, rel=1e-5)
    assert out[2, 0, 0] == pytest.approx((0 - 0.406) / 0.225, rel=1e-5)


def test_ctc_greedy_decode_merges_repeats_drops_blanks_and_averages_kept_steps():
    charset = ["blank", "a", "b", " "]
    steps = [(1, 0.9), (1, 0.8), (0, 0.99), (1, 0.7), (2, 0.6), (3, 0.5), (0, 0.9)]
    probs = np.zeros((2, len(steps), 4), np.float32)
    for t, (cls, p) in enumerate(steps):
        probs[0, t, cls] = p
        probs[0, t, [c for c in range(4) if c != cls]] = (1 - p) / 3
    probs[1, :, 0] = 1.0  # all blank
    [(text, conf), (empty, empty_conf)] = ctc_greedy_decode(probs, charset)
    assert text == "aab "
    assert conf == pytest.approx(np.mean([0.9, 0.7, 0.6, 0.5]))
    assert (empty, empty_conf) == ("", 0.0)


def test_load_char_dict(tmp_path):
    path = tmp_path / "keys.txt"
    path.write_bytes("x\r\n中\ny\n".encode())
    assert load_char_dict(path) == ["blank", "x", "中", "y", " "]
    assert load_char_dict(path, use_space_char=False) == ["blank", "x", "中", "y"]
    (tmp_path / "empty.txt").write_bytes(b"")
    with pytest.raises(ValueError, match="empty"):
        load_char_dict(tmp_path / "empty.txt")


def test_get_mini_boxes_orders_corners_and_reports_short_side():
    contour = np.array([[[10, 20]], [[50, 20]], [[50, 30]], [[10, 30]]], dtype=np.int32)
    box, sside = get_mini_boxes(contour)
    assert np.allclose(np.array(box), [[10, 20], [50, 20], [50, 30], [10, 30]])
    assert sside == pytest.approx(10)


def test_db_postprocess_finds_unclips_and_rescales():
    prob = np.zeros((64, 96), np.float32)
    prob[20:30, 10:60] = 0.9  # one text region, 50 x 10
    prob[50:52, 80:82] = 0.9  # too small (short side < 3)
    prob[40:48, 10:40] = 0.5  # under box_thresh 0.6
    boxes, scores = db_postprocess(prob, src_h=128, src_w=192, params=DbParams())
    assert len(boxes) == 1 and scores[0] == pytest.approx(0.9, abs=1e-3)
    (x0, y0), (x1, y1) = boxes[0].min(axis=0), boxes[0].max(axis=0)
    # region spans x 10..59, y 20..29 (minAreaRect of the contour: 49 x 9), unclip distance 49*9*1.5/116 = 5.7 px,
    # then everything doubles (original image is 2x the map).
    assert 2 * (10 - 7) <= x0 <= 2 * (10 - 4) and 2 * (59 + 4) <= x1 <= 2 * (59 + 7)
    assert 2 * (20 - 7) <= y0 <= 2 * (20 - 4) and 2 * (29 + 4) <= y1 <= 2 * (29 + 7)
    assert boxes[0].dtype == np.int32
    strict, _ = db_postprocess(prob, 128, 192, DbParams(box_thresh=0.95))
    assert strict == []
    loose, _ = db_postprocess(prob, 128, 192, DbParams(box_thresh=0.4))
    assert len(loose) == 2


def test_order_points_clockwise_and_filter():
    pts = np.array([[50, 30], [10, 20], [10, 30], [50, 20]], np.float32)
    assert order_points_clockwise(pts).tolist() == [[10, 20], [50, 20], [50, 30], [10, 30]]
    thin = np.array([[0, 0], [40, 0], [40, 3], [0, 3]], np.float32)  # 3 px tall: dropped
    outside = np.array([[-5, -5], [120, -5], [120, 40], [-5, 40]], np.float32)  # clipped to the 100x50 image
    kept, scores = filter_det_boxes([pts, thin, outside], [0.7, 0.8, 0.9], img_h=50, img_w=100)
    assert scores == [0.7, 0.9]
    assert kept[1].tolist() == [[0, 0], [99, 0], [99, 40], [0, 40]]


def test_rotate_crop_turns_tall_crops():
    img = np.zeros((100, 100, 3), np.uint8)
    img[10:90, 40:60] = 200
    wide = get_rotate_crop_image(img, np.array([[10, 10], [90, 10], [90, 30], [10, 30]], np.float32))
    assert wide.shape == (20, 80, 3)
    tall = get_rotate_crop_image(img, np.array([[40, 10], [60, 10], [60, 90], [40, 90]], np.float32))
    assert tall.shape == (20, 80, 3) and tall.mean() == pytest.approx(200, abs=2)  # turned 90 degrees
    with pytest.raises(ValueError, match="4 corner points"):
        get_rotate_crop_image(img, np.zeros((3, 2), np.float32))


def test_resize_norm_img_keeps_ratio_and_pads_to_the_batch_width():
    crop = np.full((24, 48, 3), 255, np.uint8)  # ratio 2 -> 96 px wide at height 48
    out = resize_norm_img(crop, max_wh_ratio=320 / 48)
    assert out.shape == (3, 48, 320)
    assert np.all(out[:, :, :96] == 1.0) and np.all(out[:, :, 96:] == 0.0)
    long_crop = np.zeros((10, 200, 3), np.uint8)  # ratio 20 -> 960 px, batch max ratio 10 -> squeezed to 480
    out = resize_norm_img(long_crop, max_wh_ratio=10.0)
    assert out.shape == (3, 48, 480) and np.all(out == -1.0)


@pytest.mark.parametrize("kwargs, message", [
    ({"det_limit_type": "long"}, "det_limit_type 'long'"),
    ({"det_db_score_mode": "medium"}, "det_db_score_mode 'medium'"),
    ({"det_db_thresh": 1.5}, "det_db_thresh"),
    ({"det_db_unclip_ratio": 0}, "unclip_ratio"),
    ({"order_method": "xy"}, "order_method 'xy'"),
    ({"rec_batch_num": 0}, "rec_batch_num"),
    ({"rec_image_shape": (1, 48, 320)}, "rec_image_shape"),
    ({"drop_score": -0.1}, "drop_score"),
])
def test_config_rejects_bad_values(kwargs, message):
    with pytest.raises(ValueError, match=message):
        OcrConfig(**kwargs)


def test_config_defaults_are_paddleocr_v4():
    cfg = OcrConfig()
    assert (cfg.det_limit_side_len, cfg.det_limit_type, cfg.det_db_thresh, cfg.det_db_box_thresh,
            cfg.det_db_unclip_ratio, cfg.rec_batch_num, tuple(cfg.rec_image_shape), cfg.drop_score) == (
        960, "max", 0.3, 0.6, 1.5, 6, (3, 48, 320), 0.5)
    assert cfg.char_dict_path().name == "ppocr_keys_v1.txt" and cfg.inference.enable_mkldnn
