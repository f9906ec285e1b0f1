"""The OCR stage: PP-OCR detection + recognition over page images, returning :class:`schemas.records.PageOcr`.

This is PaddleOCR's ``TextSystem`` (``tools/infer/predict_system.py``) without the angle classifier: detect
boxes, put them in PaddleOCR's ``sorted_boxes`` order, crop each box upright, recognise every crop of every page
of the call in ratio-sorted batches, and drop lines whose confidence is under ``drop_score``. The lines are then
put in the reading order the KIE models were trained on (``tb-yx``) unless ``order_method="none"``.

Images come in as **RGB** (the decode stage's convention) and are turned to BGR here, because the PP-OCR models
were trained on cv2 (BGR) images.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from models import zoo
from models.paddle_infer import InferenceOptions
from models.reading_order import ORDER_METHODS, order_lines, order_ppocr_det
from models.text_detector import DbParams, TextDetector
from models.text_recognizer import TextRecognizer, get_rotate_crop_image
from schemas.records import OcrLine, PageOcr

__all__ = ["OcrConfig", "OcrPredictor", "validate_image", "MIN_IMAGE_SIDE"]

MIN_IMAGE_SIDE = 2  # a page must be at least 2x2 pixels


@dataclass(frozen=True)
class OcrConfig:
    """OCR settings, with PaddleOCR's argument names and its PP-OCRv4 defaults.

    Attributes:
        det_model_dir: detection inference folder (default: the bundled PP-OCRv4 detector).
        rec_model_dir: recognition inference folder (default: the bundled PP-OCRv4 recognizer).
        rec_char_dict_path: character dictionary; ``None`` means ``ppocr_keys_v1.txt`` inside ``rec_model_dir``.
        use_space_char: the dictionary gets a trailing space class.
        det_limit_side_len: ``DetResizeForTest`` side limit.
        det_limit_type: ``"max"``, ``"min"`` or ``"resize_long"``.
        det_db_thresh: binary-map threshold.
        det_db_box_thresh: minimum box score.
        det_db_unclip_ratio: box expansion ratio.
        det_db_score_mode: ``"fast"`` or ``"slow"``.
        det_db_max_candidates: contours considered per page.
        use_dilation: dilate the binary map first.
        rec_batch_num: crops per recognition forward.
        rec_width_bucket: each recognition batch's width is rounded up to a bounded set of widths
            (``text_recognizer.bucket_width``: multiples of this up to 8x, then doubling steps); 0 keeps
            PaddleOCR's exact widths, which make nearly every batch a new oneDNN shape (slower first runs and
            memory that grows with every new width; measured with ``bench/bench_ocr.py --widths``).
        rec_pad_batch: pad a short last recognition batch to ``rec_batch_num`` rows, so the batch size is one
            shape too (no measurable cost at batch 6; each new oneDNN shape held 0.2-1 GiB in bench_ocr --widths).
        rec_image_shape: recognizer input ``(C, H, W)``.
        drop_score: lines with a lower recognition confidence are dropped.
        order_method: ``"tb-yx"`` (what SER/RE expect) or ``"none"`` (PaddleOCR's ``sorted_boxes`` order).
        inference: inference options (device, backend, precision, oneDNN, threads, unverified folders); the
            backend and precision each model runs with are decided on the loading machine (``models.backends``).
    """

    det_model_dir: str = field(default_factory=lambda: str(zoo.default_det_dir()))
    rec_model_dir: str = field(default_factory=lambda: str(zoo.default_rec_dir()))
    rec_char_dict_path: str | None = None
    use_space_char: bool = True
    det_limit_side_len: int = 960
    det_limit_type: str = "max"
    det_db_thresh: float = 0.3
    det_db_box_thresh: float = 0.6
    det_db_unclip_ratio: float = 1.5
    det_db_score_mode: str = "fast"
    det_db_max_candidates: int = 1000
    use_dilation: bool = False
    rec_batch_num: int = 6
    rec_width_bucket: int = 160
    rec_pad_batch: bool = True
    rec_image_shape: tuple[int, int, int] = (3, 48, 320)
    drop_score: float = 0.5
    order_method: str = "tb-yx"
    inference: InferenceOptions = field(default_factory=InferenceOptions)

    def __post_init__(self) -> None:
        self.db_params()  # validates the det_* fields
        if self.order_method not in ORDER_METHODS:
            raise ValueError(f"unknown order_method '{self.order_method}', expected one of {list(ORDER_METHODS)}")
        if self.rec_batch_num < 1:
            raise ValueError(f"rec_batch_num must be >= 1, got {self.rec_batch_num}")
        if self.rec_width_bucket < 0:
            raise ValueError(f"rec_width_bucket must be >= 0 (0 = PaddleOCR's exact widths), got "
                             f"{self.rec_width_bucket}")
        shape = tuple(self.rec_image_shape)
        if len(shape) != 3 or shape[0] != 3 or shape[1] < 1 or shape[2] < 1:
            raise ValueError(f"rec_image_shape must be (3, H, W) with H, W >= 1, got {self.rec_image_shape}")
        if not 0.0 <= self.drop_score <= 1.0:
            raise ValueError(f"drop_score must be in [0, 1], got {self.drop_score}")

    def db_params(self) -> DbParams:
        """The detector's pre/post-processing parameters."""
        return DbParams(limit_side_len=self.det_limit_side_len, limit_type=self.det_limit_type,
                        thresh=self.det_db_thresh, box_thresh=self.det_db_box_thresh,
                        unclip_ratio=self.det_db_unclip_ratio, score_mode=self.det_db_score_mode,
                        use_dilation=self.use_dilation, max_candidates=self.det_db_max_candidates)

    def char_dict_path(self) -> Path:
        """The dictionary file actually used."""
        if self.rec_char_dict_path is not None:
            return Path(self.rec_char_dict_path)
        return Path(self.rec_model_dir) / "ppocr_keys_v1.txt"


def validate_image(image: object, index: int = 0) -> np.ndarray:
    """Checks one page image and returns it as a contiguous array.

    Args:
        image: the page, expected ``(H, W, 3)`` uint8 RGB.
        index: its position in the call (for the message).

    Returns:
        The image, contiguous.

    Raises:
        ValueError: not an array, empty, wrong dtype, wrong rank or channel count, or smaller than 2x2.
    """
    if not isinstance(image, np.ndarray):
        raise ValueError(f"image {index}: expected a numpy array (H, W, 3) uint8 RGB, got {type(image).__name__}")
    if image.size == 0:
        raise ValueError(f"image {index}: empty array of shape {image.shape}")
    if image.dtype != np.uint8:
        raise ValueError(f"image {index}: dtype {image.dtype} is not supported, expected uint8 RGB")
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image {index}: shape {image.shape} is not (H, W, 3) RGB; the decode stage converts "
                         f"gray, RGBA and palette images to RGB before OCR")
    if min(image.shape[:2]) < MIN_IMAGE_SIDE:
        raise ValueError(f"image {index}: size {image.shape[1]}x{image.shape[0]} is too small, each side must be "
                         f">= {MIN_IMAGE_SIDE} pixels")
    return np.ascontiguousarray(image)


class OcrPredictor:
    """PP-OCR detection + recognition over RGB page images; safe to call from several threads.

    Args:
        config: model folders and PaddleOCR parameters (default ``OcrConfig()``: the bundled PP-OCRv4 models).
            Both folders are verified against their ``SHA256SUMS`` and checked with one warm-up forward each.

    Raises:
        ValueError: a bad folder (missing files, unverified, wrong model kind, dictionary mismatch).

    >>> predictor = OcrPredictor(OcrConfig())  # doctest: +SKIP
    >>> [page] = predictor([rgb_page])  # doctest: +SKIP
    >>> page.lines[0].text, page.lines[0].box  # doctest: +SKIP
    ('汇丰晋信', (104, 112, 532, 178))
    """

    def __init__(self, config: OcrConfig | None = None) -> None:
        config = config if config is not None else OcrConfig()
        self.config = config
        self.detector = TextDetector(config.det_model_dir, config.db_params(), config.inference)
        self.recognizer = TextRecognizer(config.rec_model_dir, config.char_dict_path(),
                                         image_shape=tuple(config.rec_image_shape), batch_num=config.rec_batch_num,
                                         use_space_char=config.use_space_char, options=config.inference,
                                         width_bucket=config.rec_width_bucket, pad_batch=config.rec_pad_batch)
        self.version = f"det={self.detector.version};rec={self.recognizer.version}"
        self.runtime = f"det={self.detector.predictor.runtime.label()};rec={self.recognizer.predictor.runtime.label()}"
        """Backend/device/precision of each model, e.g. ``det=openvino/cpu/fp32;rec=openvino/cpu/fp32``."""

    def __call__(self, images: Sequence[np.ndarray]) -> list[PageOcr]:
        """Runs OCR on a batch of pages.

        Args:
            images: ``(H, W, 3)`` uint8 RGB pages.

        Returns:
            One :class:`PageOcr` per image, lines in the configured reading order. ``det_ms`` is the page's own
            detection time; recognition runs once over all crops of the call, and ``rec_ms`` is that time split
            across pages in proportion to their number of crops.

        Raises:
            ValueError: a bad image (the message names its index).
        """
        pages = [validate_image(img, i) for i, img in enumerate(images)]
        bgr_pages = [np.ascontiguousarray(img[:, :, ::-1]) for img in pages]

        polygons: list[list[np.ndarray]] = []
        det_scores: list[list[float]] = []
        det_ms: list[float] = []
        crops: list[np.ndarray] = []
        for bgr in bgr_pages:
            start = time.perf_counter()
            boxes, scores = self.detector(bgr)
            order = order_ppocr_det([b.tolist() for b in boxes])  # PaddleOCR's sorted_boxes
            boxes, scores = [boxes[i] for i in order], [scores[i] for i in order]
            crops.extend(get_rotate_crop_image(bgr, box) for box in boxes)
            det_ms.append((time.perf_counter() - start) * 1000.0)
            polygons.append(boxes)
            det_scores.append(scores)

        start = time.perf_counter()
        recognised = self.recognizer.recognize(crops) if crops else []
        rec_total_ms = (time.perf_counter() - start) * 1000.0

        results: list[PageOcr] = []
        cursor = 0
        for page, boxes, scores, page_det_ms in zip(pages, polygons, det_scores, det_ms):
            texts = recognised[cursor:cursor + len(boxes)]
            cursor += len(boxes)
            lines = [_to_line(text, conf, box, det_score, char_x)
                     for (text, conf, char_x), box, det_score in zip(texts, boxes, scores)
                     if conf >= self.config.drop_score]
            # every line takes part in the sort; empty texts are skipped later, while encoding (as PaddleOCR)
            lines = [lines[i] for i in order_lines([line.box for line in lines], method=self.config.order_method)]
            share = len(boxes) / len(crops) if crops else 0.0
            results.append(PageOcr(width=int(page.shape[1]), height=int(page.shape[0]), lines=tuple(lines),
                                   det_ms=page_det_ms, rec_ms=rec_total_ms * share))
        return results


def _to_line(text: str, conf: float, box: np.ndarray, det_score: float, char_x: tuple[float, ...] = ()) -> OcrLine:
    """One recognised box as an :class:`OcrLine` (box = PaddleOCR's ``trans_poly_to_bbox``)."""
    xs, ys = box[:, 0], box[:, 1]
    polygon = tuple((float(x), float(y)) for x, y in box)
    return OcrLine(text=text, score=float(conf), polygon=polygon,  # type: ignore[arg-type]
                   box=(int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())), det_score=float(det_score),
                   char_x=tuple(char_x) if len(char_x) == len(text) else ())
