"""PP-OCR text detection (DB, "Differentiable Binarization") on an exported Paddle Inference model.

Faithful to PaddleOCR's ``tools/infer/predict_det.py`` with the PP-OCRv3/v4/v5 defaults:

1. ``DetResizeForTest`` (limit type ``max``, 960): scale so the long side is at most 960 px, then round each side
   to a multiple of 32 (at least 32);
2. ``NormalizeImage``: ``(x / 255 - mean) / std`` with the ImageNet mean/std applied to the **BGR** image as
   stored (PaddleOCR feeds cv2 images, so the "R" mean meets the blue channel), then HWC -> CHW;
3. the network gives a probability map ``(1, 1, H, W)``;
4. ``DBPostProcess``: threshold 0.3, contours, min-area rectangles, box score ("fast": mean probability in the
   box), box threshold 0.6, unclip (ratio 1.5, pyclipper round offset), min-size filters, rescale to the
   original image;
5. ``filter_tag_det_res``: order points clockwise, clip to the image, drop boxes 3 px or thinner.

Coordinates: every polygon returned is in pixels of the input image, ``(4, 2)`` float32, clockwise from top-left.
The image given to :class:`TextDetector` is BGR uint8 (the caller converts).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pyclipper
from shapely.geometry import Polygon

from models.paddle_infer import InferenceOptions
from models.predictors import create_predictor

__all__ = [
    "DbParams",
    "TextDetector",
    "det_resize",
    "normalize_image",
    "db_postprocess",
    "get_mini_boxes",
    "box_score_fast",
    "box_score_slow",
    "unclip",
    "order_points_clockwise",
    "filter_det_boxes",
    "det_trt_shapes",
    "LIMIT_TYPES",
    "SCORE_MODES",
]

LIMIT_TYPES = ("max", "min", "resize_long")
SCORE_MODES = ("fast", "slow")
_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32).reshape(1, 1, 3)
_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32).reshape(1, 1, 3)
_MIN_SIZE = 3  # DBPostProcess.min_size (not configurable in PaddleOCR either)


@dataclass(frozen=True)
class DbParams:
    """DB pre/post-processing parameters (PaddleOCR's ``det_*`` arguments and defaults for PP-OCRv4).

    Attributes:
        limit_side_len: side length limit of ``DetResizeForTest``.
        limit_type: ``"max"`` (long side at most the limit), ``"min"`` (short side at least), ``"resize_long"``.
        thresh: probability threshold of the binary map.
        box_thresh: minimum box score.
        unclip_ratio: how far boxes grow back (DB shrinks text regions when it trains).
        score_mode: ``"fast"`` (mean inside the min-area box) or ``"slow"`` (mean inside the contour).
        use_dilation: dilate the binary map with a 2x2 kernel first.
        max_candidates: at most this many contours are considered.
    """

    limit_side_len: int = 960
    limit_type: str = "max"
    thresh: float = 0.3
    box_thresh: float = 0.6
    unclip_ratio: float = 1.5
    score_mode: str = "fast"
    use_dilation: bool = False
    max_candidates: int = 1000

    def __post_init__(self) -> None:
        if self.limit_type not in LIMIT_TYPES:
            raise ValueError(f"unknown det_limit_type '{self.limit_type}', expected one of {list(LIMIT_TYPES)}")
        if self.score_mode not in SCORE_MODES:
            raise ValueError(f"unknown det_db_score_mode '{self.score_mode}', expected one of {list(SCORE_MODES)}")
        if self.limit_side_len < 32:
            raise ValueError(f"det_limit_side_len must be >= 32, got {self.limit_side_len}")
        for name in ("thresh", "box_thresh"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"det_db_{name} must be in [0, 1], got {value}")
        if self.unclip_ratio <= 0:
            raise ValueError(f"det_db_unclip_ratio must be > 0, got {self.unclip_ratio}")
        if self.max_candidates < 1:
            raise ValueError(f"det_db_max_candidates must be >= 1, got {self.max_candidates}")


def det_resize(image: np.ndarray, limit_side_len: int = 960, limit_type: str = "max"
               ) -> tuple[np.ndarray, float, float]:
    """PaddleOCR's ``DetResizeForTest`` (``resize_image_type0``).

    Args:
        image: ``(H, W, 3)`` uint8 image.
        limit_side_len: the side length limit.
        limit_type: ``"max"``, ``"min"`` or ``"resize_long"``.

    Returns:
        ``(resized image, ratio_h, ratio_w)``; both sides of the resized image are multiples of 32.
    """
    h, w = image.shape[:2]
    if limit_type == "max":
        ratio = float(limit_side_len) / max(h, w) if max(h, w) > limit_side_len else 1.0
    elif limit_type == "min":
        ratio = float(limit_side_len) / min(h, w) if min(h, w) < limit_side_len else 1.0
    elif limit_type == "resize_long":
        ratio = float(limit_side_len) / max(h, w)
    else:
        raise ValueError(f"unknown limit_type '{limit_type}', expected one of {list(LIMIT_TYPES)}")
    resize_h = max(int(round(int(h * ratio) / 32) * 32), 32)
    resize_w = max(int(round(int(w * ratio) / 32) * 32), 32)
    resized = cv2.resize(image, (resize_w, resize_h))
    return resized, resize_h / float(h), resize_w / float(w)


def normalize_image(image: np.ndarray) -> np.ndarray:
    """``NormalizeImage`` (ImageNet mean/std on ``x / 255``, channels as stored) + ``ToCHWImage``.

    Args:
        image: ``(H, W, 3)`` uint8, BGR as PaddleOCR feeds it.

    Returns:
        ``(3, H, W)`` float32.
    """
    out = (image.astype(np.float32) * np.float32(1.0 / 255.0) - _MEAN) / _STD
    return out.transpose(2, 0, 1)


def get_mini_boxes(contour: np.ndarray) -> tuple[list[np.ndarray], float]:
    """Min-area rectangle of a contour, its corners ordered as PaddleOCR's ``get_mini_boxes``.

    Args:
        contour: points ``(N, 1, 2)`` or ``(N, 2)``.

    Returns:
        ``(4 corner points, length of the short side)``.
    """
    rect = cv2.minAreaRect(contour)
    points = sorted(list(cv2.boxPoints(rect)), key=lambda p: p[0])
    # left pair: the upper one first; right pair: the upper one second
    i1, i4 = (0, 1) if points[1][1] > points[0][1] else (1, 0)
    i2, i3 = (2, 3) if points[3][1] > points[2][1] else (3, 2)
    return [points[i1], points[i2], points[i3], points[i4]], min(rect[1])


def box_score_fast(prob: np.ndarray, box: np.ndarray) -> float:
    """Mean probability inside a quadrilateral (PaddleOCR's ``box_score_fast``).

    Args:
        prob: ``(H, W)`` float32 probability map.
        box: ``(4, 2)`` corner points in map pixels.

    Returns:
        The mean of ``prob`` over the filled polygon.
    """
    h, w = prob.shape[:2]
    box = box.copy()
    xmin = int(np.clip(np.floor(box[:, 0].min()), 0, w - 1))
    xmax = int(np.clip(np.ceil(box[:, 0].max()), 0, w - 1))
    ymin = int(np.clip(np.floor(box[:, 1].min()), 0, h - 1))
    ymax = int(np.clip(np.ceil(box[:, 1].max()), 0, h - 1))
    mask = np.zeros((ymax - ymin + 1, xmax - xmin + 1), dtype=np.uint8)
    box[:, 0] -= xmin
    box[:, 1] -= ymin
    cv2.fillPoly(mask, box.reshape(1, -1, 2).astype(np.int32), 1)
    return float(cv2.mean(prob[ymin:ymax + 1, xmin:xmax + 1], mask)[0])


def box_score_slow(prob: np.ndarray, contour: np.ndarray) -> float:
    """Mean probability inside the contour itself (PaddleOCR's ``box_score_slow``).

    Args:
        prob: ``(H, W)`` float32 probability map.
        contour: contour points in map pixels.

    Returns:
        The mean of ``prob`` over the filled contour.
    """
    h, w = prob.shape[:2]
    pts = np.reshape(contour.copy(), (-1, 2))
    xmin, xmax = int(np.clip(pts[:, 0].min(), 0, w - 1)), int(np.clip(pts[:, 0].max(), 0, w - 1))
    ymin, ymax = int(np.clip(pts[:, 1].min(), 0, h - 1)), int(np.clip(pts[:, 1].max(), 0, h - 1))
    mask = np.zeros((ymax - ymin + 1, xmax - xmin + 1), dtype=np.uint8)
    pts[:, 0] -= xmin
    pts[:, 1] -= ymin
    cv2.fillPoly(mask, pts.reshape(1, -1, 2).astype(np.int32), 1)
    return float(cv2.mean(prob[ymin:ymax + 1, xmin:xmax + 1], mask)[0])


def unclip(box: np.ndarray, unclip_ratio: float) -> np.ndarray:
    """Grows a polygon by ``area * ratio / perimeter`` (pyclipper round offset), as DB's ``unclip``.

    Args:
        box: ``(N, 2)`` polygon.
        unclip_ratio: the DB unclip ratio.

    Returns:
        The offset paths, ``(paths, M, 2)`` (one path for a convex box).
    """
    poly = Polygon(box)
    distance = poly.area * unclip_ratio / poly.length
    offset = pyclipper.PyclipperOffset()
    offset.AddPath(box, pyclipper.JT_ROUND, pyclipper.ET_CLOSEDPOLYGON)
    return np.array(offset.Execute(distance))


def db_postprocess(prob: np.ndarray, src_h: int, src_w: int, params: DbParams = DbParams()
                   ) -> tuple[list[np.ndarray], list[float]]:
    """``DBPostProcess`` (quad boxes) for one probability map.

    Args:
        prob: ``(H, W)`` float32 probability map at the resized input's size.
        src_h: height of the original image.
        src_w: width of the original image.
        params: thresholds and modes.

    Returns:
        ``(boxes, scores)``: ``(4, 2)`` int32 corner arrays in original-image pixels, and their box scores.
    """
    bitmap = prob > params.thresh
    if params.use_dilation:
        bitmap = cv2.dilate(bitmap.astype(np.uint8), np.ones((2, 2), dtype=np.uint8))
    height, width = bitmap.shape
    contours, _ = cv2.findContours((bitmap * 255).astype(np.uint8), cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)
    boxes: list[np.ndarray] = []
    scores: list[float] = []
    for contour in contours[:params.max_candidates]:
        points, sside = get_mini_boxes(contour)
        if sside < _MIN_SIZE:
            continue
        points = np.array(points)
        if params.score_mode == "fast":
            score = box_score_fast(prob, points.reshape(-1, 2))
        else:
            score = box_score_slow(prob, contour)
        if params.box_thresh > score:
            continue
        expanded = unclip(points, params.unclip_ratio)
        if len(expanded) != 1:  # a convex quad grows into one path; anything else is degenerate
            continue
        box, sside = get_mini_boxes(expanded.reshape(-1, 1, 2))
        if sside < _MIN_SIZE + 2:
            continue
        box = np.array(box)
        box[:, 0] = np.clip(np.round(box[:, 0] / width * src_w), 0, src_w)
        box[:, 1] = np.clip(np.round(box[:, 1] / height * src_h), 0, src_h)
        boxes.append(box.astype(np.int32))
        scores.append(score)
    return boxes, scores


def order_points_clockwise(pts: np.ndarray) -> np.ndarray:
    """Orders 4 points top-left, top-right, bottom-right, bottom-left (PaddleOCR's sum/diff rule).

    Args:
        pts: ``(4, 2)`` points.

    Returns:
        ``(4, 2)`` float32.
    """
    rect = np.zeros((4, 2), dtype=np.float32)
    s = pts.sum(axis=1)
    rect[0] = pts[np.argmin(s)]
    rect[2] = pts[np.argmax(s)]
    rest = np.delete(pts, (np.argmin(s), np.argmax(s)), axis=0)
    diff = np.diff(np.array(rest), axis=1)
    rect[1] = rest[np.argmin(diff)]
    rect[3] = rest[np.argmax(diff)]
    return rect


def filter_det_boxes(boxes: list[np.ndarray], scores: list[float], img_h: int, img_w: int
                     ) -> tuple[list[np.ndarray], list[float]]:
    """``filter_tag_det_res``: clockwise order, clip to the image, drop boxes 3 px or thinner.

    Args:
        boxes: ``(4, 2)`` boxes from :func:`db_postprocess`.
        scores: their scores (kept aligned).
        img_h: image height.
        img_w: image width.

    Returns:
        ``(boxes, scores)`` that survive, boxes as ``(4, 2)`` float32 with integer values.
    """
    kept, kept_scores = [], []
    for box, score in zip(boxes, scores):
        box = order_points_clockwise(np.asarray(box))
        box[:, 0] = np.floor(np.clip(box[:, 0], 0, img_w - 1))
        box[:, 1] = np.floor(np.clip(box[:, 1], 0, img_h - 1))
        if int(np.linalg.norm(box[0] - box[1])) <= 3 or int(np.linalg.norm(box[0] - box[3])) <= 3:
            continue
        kept.append(box)
        kept_scores.append(score)
    return kept, kept_scores


def det_trt_shapes(params: DbParams) -> dict[str, tuple[list[int], list[int], list[int]]]:
    """TensorRT shape ranges ``{"x": (min, opt, max)}`` of the detector's input under :func:`det_resize`.

    Args:
        params: the resize limits.

    Returns:
        One page a call, 32 px up to the longest side ``det_resize`` gives (``"min"``: 4x the limit, beyond
        which engines are rebuilt at run time); the optimum is a portrait page at the limit.
    """
    side = -(-params.limit_side_len // 32) * 32
    longest = side * 4 if params.limit_type == "min" else side
    return {"x": ([1, 3, 32, 32], [1, 3, side, max(32, side * 2 // 3 // 32 * 32)], [1, 3, longest, longest])}


class TextDetector:
    """DB text detector over a PaddleOCR inference folder (``*_det_infer``).

    Args:
        model_dir: the exported detection model (``inference.pdmodel`` or ``inference.json`` + params).
        params: DB pre/post-processing parameters.
        options: inference options (default ``InferenceOptions()``): backend and precision requests are resolved
            by ``models.backends`` (OpenVINO or Paddle; never Paddle bf16, which fails on this model).

    Raises:
        ValueError: the folder is missing files, fails verification, or is not a detection model.
    """

    def __init__(self, model_dir: str | Path, params: DbParams = DbParams(),
                 options: InferenceOptions | None = None) -> None:
        self.params = params
        self.predictor = create_predictor(model_dir, options or InferenceOptions(), "det",
                                          trt_shapes=det_trt_shapes(params))
        self.version = self.predictor.version
        # A 32x32 warm-up run checks the folder really is a detector: (1, 1, H, W) probability map.
        out = self._forward(np.zeros((1, 3, 32, 32), dtype=np.float32), model_dir)
        if out.ndim != 4 or out.shape[1] != 1 or out.shape[2:] != (32, 32):
            raise ValueError(f"model folder {model_dir} is not a DB text detector: a (1, 3, 32, 32) input gave "
                             f"output shape {tuple(out.shape)}, expected (1, 1, 32, 32) (is it a recognizer?)")

    def _forward(self, batch: np.ndarray, model_dir: str | Path | None = None) -> np.ndarray:
        try:
            return self.predictor.run([batch])[0]
        except (RuntimeError, ValueError) as e:
            where = model_dir or self.predictor.model_dir
            raise ValueError(f"detection model {where} failed on input shape {batch.shape}: {e}") from e

    def __call__(self, image_bgr: np.ndarray) -> tuple[list[np.ndarray], list[float]]:
        """Detects text boxes in one image.

        Args:
            image_bgr: ``(H, W, 3)`` uint8 BGR image.

        Returns:
            ``(boxes, scores)``: ``(4, 2)`` float32 clockwise polygons in image pixels, and their DB scores,
            in detection order (unsorted).
        """
        h, w = image_bgr.shape[:2]
        resized, _, _ = det_resize(image_bgr, self.params.limit_side_len, self.params.limit_type)
        batch = normalize_image(resized)[np.newaxis]  # (1, 3, H', W')
        prob = self._forward(batch)[0, 0]  # (H', W')
        boxes, scores = db_postprocess(prob, h, w, self.params)
        return filter_det_boxes(boxes, scores, h, w)
