"""PP-OCR text recognition (SVTR-LCNet + CTC) on an exported Paddle Inference model.

Faithful to PaddleOCR's ``tools/infer/predict_rec.py`` / ``predict_system.py`` and ``CTCLabelDecode``:

1. ``get_rotate_crop_image``: each detected quadrilateral is warped to an upright rectangle (perspective
   transform, cubic, replicated border); crops at least 1.5 times taller than wide are turned 90 degrees;
2. crops are sorted by width/height ratio and recognised ``rec_batch_num`` at a time; every crop of a batch is
   resized to height 48 keeping its ratio and right-padded with zeros to ``48 * max(320/48, batch max ratio)``,
   pixels scaled to ``[-1, 1]`` (``resize_norm_img``);
   optionally (``width_bucket > 0``, our addition) that width is rounded up to a bounded set of widths
   (:func:`bucket_width`), because oneDNN builds and caches kernels per input shape: with PaddleOCR's exact
   widths nearly every batch is a new shape, slower on its first run, and a long-running process grows by
   hundreds of MiB per shape. More zero padding on the right is what CTC already sees for the batch's
   shorter crops, so the text rarely changes;
3. CTC greedy decoding: argmax per step, merge repeats, drop the blank (index 0); the dictionary is the file's
   lines plus a space (``use_space_char``); confidence = mean probability of the kept steps (0 when empty).

Crops are BGR, as PaddleOCR's (the caller converts).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from models.paddle_infer import InferenceOptions
from models.predictors import create_predictor

__all__ = ["TextRecognizer", "get_rotate_crop_image", "resize_norm_img", "load_char_dict", "ctc_greedy_decode",
           "bucket_width", "rec_trt_shapes", "LINEAR_BUCKETS"]

LINEAR_BUCKETS = 8  # widths step by the bucket up to 8 buckets, then by steps that double (padding < 1/4)


def get_rotate_crop_image(image: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Cuts a quadrilateral out of an image as an upright rectangle.

    Args:
        image: ``(H, W, 3)`` uint8 image.
        points: ``(4, 2)`` corners, clockwise from top-left.

    Returns:
        The crop, turned 90 degrees counter-clockwise when its height/width is at least 1.5.
    """
    points = np.asarray(points, dtype=np.float32)
    if points.shape != (4, 2):
        raise ValueError(f"a crop needs 4 corner points (4, 2), got shape {points.shape}")
    crop_w = int(max(np.linalg.norm(points[0] - points[1]), np.linalg.norm(points[2] - points[3])))
    crop_h = int(max(np.linalg.norm(points[0] - points[3]), np.linalg.norm(points[1] - points[2])))
    target = np.float32([[0, 0], [crop_w, 0], [crop_w, crop_h], [0, crop_h]])
    matrix = cv2.getPerspectiveTransform(points, target)
    crop = cv2.warpPerspective(image, matrix, (crop_w, crop_h), borderMode=cv2.BORDER_REPLICATE,
                               flags=cv2.INTER_CUBIC)
    if crop.shape[0] * 1.0 / crop.shape[1] >= 1.5:
        crop = np.rot90(crop)
    return crop


def bucket_width(width: int, bucket: int) -> int:
    """Rounds a batch width up to a bounded set of widths.

    Widths up to ``LINEAR_BUCKETS * bucket`` round up to a multiple of ``bucket``; above that the step doubles
    each time the width doubles (e.g. bucket 160: 160, 320, ..., 1280, then 1600, 1920, 2240, 2560, then 3200,
    3840, ...), so padding stays under ``2 / LINEAR_BUCKETS`` of the width and the number of distinct widths
    grows only with the logarithm of the widest line.

    Args:
        width: the exact width in pixels (PaddleOCR's ``int(48 * max_wh_ratio)``).
        bucket: the step; 0 keeps ``width`` unchanged (PaddleOCR's behaviour).

    Returns:
        The bucketed width, at least ``width``.
    """
    if bucket < 0:
        raise ValueError(f"width bucket must be >= 0 (0 = exact widths), got {bucket}")
    if bucket == 0 or width <= 0:
        return width
    step = bucket
    while width > LINEAR_BUCKETS * step:
        step *= 2
    return -(-width // step) * step


def resize_norm_img(crop: np.ndarray, max_wh_ratio: float, image_shape: tuple[int, int, int] = (3, 48, 320),
                    width: int | None = None) -> np.ndarray:
    """PaddleOCR's ``resize_norm_img`` for CTC recognizers.

    Args:
        crop: ``(h, w, 3)`` uint8 crop.
        max_wh_ratio: the batch's largest width/height ratio (at least ``W / H`` of ``image_shape``).
        image_shape: ``(C, H, W)`` of the model input.
        width: the padded width; ``None`` means PaddleOCR's ``int(H * max_wh_ratio)``. The crop itself is still
            resized as PaddleOCR does (at most ``int(H * max_wh_ratio)`` wide), only the zero padding grows.

    Returns:
        ``(C, H, width)`` float32 in ``[-1, 1]``, zero-padded on the right.
    """
    channels, height, _ = image_shape
    exact = int(height * max_wh_ratio)
    width = exact if width is None else max(int(width), exact)
    h, w = crop.shape[:2]
    resized_w = min(exact, int(math.ceil(height * w / float(h))))
    resized = cv2.resize(crop, (resized_w, height)).astype(np.float32)
    resized = resized.transpose(2, 0, 1) / 255.0
    resized = (resized - 0.5) / 0.5
    padded = np.zeros((channels, height, width), dtype=np.float32)
    padded[:, :, :resized_w] = resized
    return padded


def load_char_dict(path: str | Path, use_space_char: bool = True) -> list[str]:
    """Reads a PaddleOCR character dictionary (one character per line).

    Args:
        path: the dictionary file (UTF-8).
        use_space_char: append a space, as PaddleOCR's ``use_space_char``.

    Returns:
        ``["blank", *characters]``: index 0 is the CTC blank.

    Raises:
        ValueError: the file is missing or empty.
    """
    file = Path(path)
    if not file.is_file():
        raise ValueError(f"character dictionary {file} does not exist")
    with open(file, "rb") as f:
        chars = [line.decode("utf-8").strip("\n").strip("\r\n") for line in f.readlines()]
    if not chars:
        raise ValueError(f"character dictionary {file} is empty")
    if use_space_char:
        chars.append(" ")
    return ["blank", *chars]


def ctc_greedy_decode(probs: np.ndarray, charset: Sequence[str], *,
                      with_steps: bool = False) -> list[tuple[str, float]] | list[tuple[str, float, tuple[int, ...]]]:
    """CTC greedy decoding as PaddleOCR's ``CTCLabelDecode``.

    Args:
        probs: ``(B, T, C)`` per-step class probabilities (the model's softmax output).
        charset: index -> character, index 0 the blank.
        with_steps: also return, per character, the time step that emitted it.

    Returns:
        One ``(text, confidence)`` per batch row (``(text, confidence, steps)`` with ``with_steps``); confidence
        is the mean probability of the kept steps.
    """
    idx = probs.argmax(axis=2)  # (B, T)
    prob = probs.max(axis=2)  # (B, T)
    results = []
    for row_idx, row_prob in zip(idx, prob):
        keep = np.ones(len(row_idx), dtype=bool)
        keep[1:] = row_idx[1:] != row_idx[:-1]
        keep &= row_idx != 0
        chars = [charset[i] for i in row_idx[keep]]
        conf = float(np.mean(row_prob[keep])) if keep.any() else 0.0
        if with_steps:  # a dictionary entry may be several characters: each gets its step
            steps = tuple(int(t) for t, c in zip(np.flatnonzero(keep), chars) for _ in c)
            results.append(("".join(chars), conf, steps))
        else:
            results.append(("".join(chars), conf))
    return results


def rec_trt_shapes(image_shape: tuple[int, int, int], batch_num: int, width_bucket: int
                   ) -> dict[str, tuple[list[int], list[int], list[int]]]:
    """TensorRT shape ranges ``{"x": (min, opt, max)}`` of the recognizer's input.

    Args:
        image_shape: ``(C, H, W)``. batch_num: crops per forward. width_bucket: the width step (0: exact widths).

    Returns:
        1..``batch_num`` crops, widths from ``W`` to ``bucket_width(8 W)`` (wider lines rebuild engines at run time).
    """
    channels, height, width = (int(v) for v in image_shape)
    widest = bucket_width(8 * width, width_bucket)
    return {"x": ([1, channels, height, width], [batch_num, channels, height, bucket_width(2 * width, width_bucket)],
                  [batch_num, channels, height, widest])}


class TextRecognizer:
    """CTC text recognizer over a PaddleOCR inference folder (``*_rec_infer``).

    Args:
        model_dir: the exported recognition model.
        char_dict_path: its character dictionary; verified with the folder when it lies inside it.
        image_shape: ``(C, H, W)``, PaddleOCR's ``rec_image_shape`` (``3,48,320`` for PP-OCRv3/v4/v5).
        batch_num: crops per forward (``rec_batch_num``).
        use_space_char: the dictionary gets a trailing space class.
        options: inference options (default ``InferenceOptions()``); backend and precision are resolved by
            ``models.backends`` (OpenVINO or Paddle).
        width_bucket: round each batch's input width up with :func:`bucket_width` (0: PaddleOCR's exact widths).
        pad_batch: fill a short last batch with blank rows up to ``batch_num``, so the batch size is one shape too.

    Raises:
        ValueError: missing or unverified files, a model that is not a CTC recognizer, or a dictionary whose
            size does not match the model's classes.
    """

    def __init__(self, model_dir: str | Path, char_dict_path: str | Path,
                 image_shape: tuple[int, int, int] = (3, 48, 320), batch_num: int = 6, use_space_char: bool = True,
                 options: InferenceOptions | None = None, width_bucket: int = 0, pad_batch: bool = False) -> None:
        if batch_num < 1:
            raise ValueError(f"batch_num must be >= 1, got {batch_num}")
        if width_bucket < 0:
            raise ValueError(f"width_bucket must be >= 0 (0 = PaddleOCR's exact widths), got {width_bucket}")
        folder, dict_file = Path(model_dir), Path(char_dict_path)
        extra = (dict_file.name,) if dict_file.resolve().parent == folder.resolve() else ()
        self.predictor = create_predictor(folder, options or InferenceOptions(), "rec", extra_files=extra,
                                          trt_shapes=rec_trt_shapes(image_shape, batch_num, width_bucket))
        self.version = self.predictor.version
        self.charset = load_char_dict(dict_file, use_space_char)
        self.image_shape = tuple(int(v) for v in image_shape)
        self.batch_num = batch_num
        self.width_bucket = width_bucket
        self.pad_batch = pad_batch
        # Warm-up run that checks the folder is a CTC recognizer matching the dictionary: (1, T, classes).
        _, height, width = self.image_shape
        out = self._forward(np.zeros((1, 3, height, width), dtype=np.float32), folder)
        if out.ndim != 3:
            raise ValueError(f"model folder {folder} is not a CTC text recognizer: a (1, 3, {height}, {width}) input "
                             f"gave output shape {tuple(out.shape)}, expected (1, steps, classes) "
                             f"(is it a detector?)")
        if out.shape[2] != len(self.charset):
            raise ValueError(f"recognizer {folder} predicts {out.shape[2]} classes but dictionary {dict_file} gives "
                             f"{len(self.charset)} (blank + {len(self.charset) - 1} characters including the "
                             f"space={use_space_char}): wrong rec_char_dict_path for this model?")

    def _forward(self, batch: np.ndarray, model_dir: Path | None = None) -> np.ndarray:
        try:
            outputs = self.predictor.run([batch])
        except (RuntimeError, ValueError) as e:
            where = model_dir or self.predictor.model_dir
            raise ValueError(f"recognition model {where} failed on input shape {batch.shape}: {e}") from e
        return outputs[-1]

    def batch_width(self, max_wh_ratio: float) -> int:
        """The padded input width of a batch whose widest crop has width/height ratio ``max_wh_ratio``.

        Args:
            max_wh_ratio: the batch's largest width/height ratio.

        Returns:
            ``bucket_width(int(H * max(W / H, max_wh_ratio)), width_bucket)``.
        """
        _, height, width = self.image_shape
        return bucket_width(int(height * max(width / height, max_wh_ratio)), self.width_bucket)

    def __call__(self, crops: Sequence[np.ndarray]) -> list[tuple[str, float]]:
        """Recognises text crops.

        Args:
            crops: ``(h, w, 3)`` uint8 BGR crops, e.g. from :func:`get_rotate_crop_image`.

        Returns:
            ``(text, confidence)`` per crop, in input order.
        """
        return [(text, conf) for text, conf, _ in self.recognize(crops)]

    def recognize(self, crops: Sequence[np.ndarray]) -> list[tuple[str, float, tuple[float, ...]]]:
        """Recognises text crops, with each character's position.

        Args:
            crops: ``(h, w, 3)`` uint8 BGR crops.

        Returns:
            ``(text, confidence, char_x)`` per crop, in input order; ``char_x`` holds each character's centre as
            a fraction (0..1) of the crop's width: its CTC step's centre, mapped from the padded model input
            back onto the resized crop.
        """
        _, height, width = self.image_shape
        results: list[tuple[str, float, tuple[float, ...]]] = [("", 0.0, ())] * len(crops)
        order = np.argsort(np.array([c.shape[1] / float(c.shape[0]) for c in crops]))
        for start in range(0, len(crops), self.batch_num):
            members = order[start:start + self.batch_num]
            max_ratio = max([width / height] + [crops[i].shape[1] / float(crops[i].shape[0]) for i in members])
            padded_w = self.batch_width(max_ratio)
            batch = np.stack([resize_norm_img(crops[i], max_ratio, self.image_shape, padded_w) for i in members])
            if self.pad_batch and len(members) < self.batch_num:  # blank rows, decoded and dropped
                fill = np.zeros((self.batch_num - len(members), *batch.shape[1:]), dtype=batch.dtype)
                batch = np.concatenate([batch, fill])
            probs = self._forward(batch)  # batch: (b, 3, H, W') -> (b, T, C)
            px_per_step = batch.shape[3] / probs.shape[1]
            for i, (text, conf, steps) in zip(members, ctc_greedy_decode(probs, self.charset, with_steps=True)):
                h, w = crops[i].shape[:2]
                resized_w = max(min(int(height * max_ratio), int(math.ceil(height * w / float(h)))), 1)
                char_x = tuple(min(max((t + 0.5) * px_per_step / resized_w, 0.0), 1.0) for t in steps)
                results[int(i)] = (text, conf, char_x)
        return results
