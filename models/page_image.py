"""The page image of LayoutXLM's visual backbone, prepared as PaddleOCR's KIE transforms prepare it.

PaddleOCR ``configs/kie/layoutlm_series/ser_layoutxlm_xfund_zh.yml`` and ``re_layoutxlm_xfund_zh.yml`` (Train and
Eval ``transforms``, the same in both) run, in this order:

1. ``DecodeImage: {img_mode: RGB, channel_first: False}``: ``cv2.imdecode`` then ``img[:, :, ::-1]``, an RGB
   ``(H, W, 3)`` uint8 array (``ppocr/data/imaug/operators.py`` ``DecodeImage.__call__``);
2. ``Resize: {size: [224, 224]}``: ``cv2.resize(img, (224, 224))``, OpenCV's default bilinear interpolation on
   the uint8 image (``Resize.resize_image``);
3. ``NormalizeImage: {scale: 1, mean: [123.675, 116.28, 103.53], std: [58.395, 57.12, 57.375], order: hwc}``:
   ``(img.astype(float32) * 1 - mean) / std`` per channel, in float32 (``NormalizeImage.__call__``);
4. ``ToCHWImage``: ``img.transpose((2, 0, 1))``.

The pipeline splits this in two: :func:`kie_thumbnail` (steps 1-2, on the page the OCR stage already decoded)
makes the small uint8 image that travels from OCR to KIE (147 KB a page instead of the 26 MB of an XFUND page),
and :func:`normalize_kie_image` (steps 3-4) runs inside the KIE predictor. The result is bit-identical to running
the four steps at once, because PaddleOCR too resizes the uint8 image before normalising it.
"""

from __future__ import annotations

import numpy as np

__all__ = ["KIE_IMAGE_SIZE", "KIE_IMAGE_MEAN", "KIE_IMAGE_STD", "kie_thumbnail", "normalize_kie_image",
           "kie_image_batch", "image_spec"]

KIE_IMAGE_SIZE = (224, 224)
"""``(height, width)`` of the visual backbone's input."""
KIE_IMAGE_MEAN = (123.675, 116.28, 103.53)
KIE_IMAGE_STD = (58.395, 57.12, 57.375)


def kie_thumbnail(rgb: np.ndarray) -> np.ndarray:
    """Resizes a page to the visual backbone's 224x224 (PaddleOCR ``Resize``), keeping uint8 RGB.

    Args:
        rgb: ``(H, W, 3)`` uint8 RGB page (a grey ``(H, W)`` page is replicated to 3 channels, as
            ``DecodeImage`` with ``IMREAD_COLOR`` does).

    Returns:
        ``(224, 224, 3)`` uint8 RGB; a page already that size is returned as is.

    Raises:
        ValueError: not a 2-D or 3-channel image.
    """
    import cv2

    img = np.asarray(rgb)
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    if img.ndim != 3 or img.shape[2] != 3 or img.shape[0] < 1 or img.shape[1] < 1:
        raise ValueError(f"expected an (H, W, 3) RGB page image, got shape {img.shape}")
    if img.dtype != np.uint8:
        raise ValueError(f"expected a uint8 page image, got {img.dtype}")
    h, w = KIE_IMAGE_SIZE
    if img.shape[:2] == (h, w):
        return img
    return cv2.resize(img, (w, h))


def normalize_kie_image(thumb: np.ndarray) -> np.ndarray:
    """PaddleOCR ``NormalizeImage`` (scale 1, ImageNet mean/std, hwc) then ``ToCHWImage``.

    Args:
        thumb: ``(224, 224, 3)`` uint8 RGB from :func:`kie_thumbnail`.

    Returns:
        ``(3, 224, 224)`` float32.
    """
    mean = np.array(KIE_IMAGE_MEAN, dtype=np.float32).reshape(1, 1, 3)
    std = np.array(KIE_IMAGE_STD, dtype=np.float32).reshape(1, 1, 3)
    return ((thumb.astype(np.float32) * np.float32(1.0) - mean) / std).transpose((2, 0, 1))


def kie_image_batch(images: list[np.ndarray]) -> np.ndarray:
    """Stacks pages (any size, uint8 RGB) into the ``(N, 3, 224, 224)`` float32 input of the visual backbone."""
    return np.stack([normalize_kie_image(kie_thumbnail(img)) for img in images]).astype(np.float32)


def image_spec() -> dict:
    """The preprocessing, written into an exported folder's ``metadata.json`` (``image``)."""
    return {"size": list(KIE_IMAGE_SIZE), "channel_order": "RGB", "interpolation": "cv2.INTER_LINEAR",
            "mean": list(KIE_IMAGE_MEAN), "std": list(KIE_IMAGE_STD), "scale": 1.0, "layout": "CHW"}
