"""Pictures of OCR + SER + RE results, in the manner of PaddleOCR's ``draw_ser_results`` / ``draw_re_results``.

Pure drawing (PIL + numpy): no Beam, no Paddle. One picture shows, on top of the page:

- every OCR line as a thin grey outline;
- every entity as a box tinted (blended) and outlined in its label's colour, with a caption ``LABEL: text``
  above it, white on the label colour;
- every RE question -> answer link as a green line between the two entity centres;
- a legend (label -> colour) in the top-right corner.

PaddleOCR picks SER colours at random (seed 2021) and draws RE heads blue, tails red; here the colours are fixed
per label (``LABEL_COLORS``) so that the same label always looks the same across pages and runs.

Fonts: captions need CJK glyphs. The bundled Droid Sans Fallback (``models/assets/fonts``, Apache-2.0) covers CJK
but no Latin letters, so every caption is drawn run by run with the first font of a chain that has the glyph:
``font_path`` (if given), then Droid Sans Fallback, then matplotlib's DejaVu Sans (always installed with
matplotlib). Coordinates are pixels of the page image, ``(x0, y0, x1, y1)`` (``schemas.records``).
"""

from __future__ import annotations

import functools
import hashlib
import logging
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from schemas.records import PageKie, PageOcr

__all__ = [
    "LABEL_COLORS",
    "LINK_COLOR",
    "LINE_COLOR",
    "BUNDLED_CJK_FONT",
    "label_color",
    "font_chain",
    "draw_text",
    "draw_page",
]

# RGB colour per SER label (QUESTION blue and ANSWER red as PaddleOCR's RE picture; HEADER purple).
LABEL_COLORS: dict[str, tuple[int, int, int]] = {
    "QUESTION": (0, 90, 255),
    "ANSWER": (230, 30, 30),
    "HEADER": (150, 0, 200),
}
LINK_COLOR = (0, 190, 0)  # RE links, green like PaddleOCR's
LINE_COLOR = (120, 120, 120)  # OCR line outlines
BUNDLED_CJK_FONT = Path(__file__).resolve().parent.parent / "models" / "assets" / "fonts" / "DroidSansFallbackFull.ttf"

_LOG = logging.getLogger(__name__)
_BLEND_ALPHA = 0.45  # weight of the tinted layer inside entity boxes
_MAX_CAPTION_CHARS = 40


def label_color(label: str) -> tuple[int, int, int]:
    """The RGB colour of a SER label: fixed for QUESTION/ANSWER/HEADER, a stable hash colour for any other.

    Args:
        label: entity label, e.g. ``"QUESTION"``.

    Returns:
        ``(r, g, b)`` in 0..255.
    """
    if label in LABEL_COLORS:
        return LABEL_COLORS[label]
    digest = hashlib.sha256(label.encode("utf-8")).digest()
    # Keep it dark enough for white caption text to stay readable.
    return (digest[0] % 180, digest[1] % 180, digest[2] % 180)


def _matplotlib_dejavu() -> Path | None:
    try:
        import matplotlib
    except ImportError:  # pragma: no cover - matplotlib is a pinned dependency
        return None
    path = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    return path if path.exists() else None


@functools.lru_cache(maxsize=16)
def _cmap(path: str) -> frozenset[int]:
    from fontTools.ttLib import TTCollection, TTFont

    if path.lower().endswith((".ttc", ".otc")):
        fonts = TTCollection(path).fonts
    else:
        fonts = [TTFont(path, lazy=True)]
    return frozenset(fonts[0].getBestCmap())


@functools.lru_cache(maxsize=64)
def _truetype(path: str, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(path, size)


def font_chain(font_path: str | Path | None = None) -> tuple[str, ...]:
    """The fonts tried, in order, for each character of a caption.

    Args:
        font_path: an optional TrueType/OpenType font (``.ttf``/``.otf``/``.ttc``) tried first.

    Returns:
        Existing font file paths: ``font_path``, the bundled CJK font, matplotlib's DejaVu Sans.

    Raises:
        ValueError: ``font_path`` does not exist, or no font at all is available.
    """
    chain: list[str] = []
    if not BUNDLED_CJK_FONT.exists():
        _LOG.warning("bundled CJK font %s is missing: CJK captions will render as empty boxes", BUNDLED_CJK_FONT)
    if font_path is not None:
        if not Path(font_path).is_file():
            raise ValueError(f"font_path '{font_path}' does not exist or is not a file")
        chain.append(str(font_path))
    for candidate in (BUNDLED_CJK_FONT, _matplotlib_dejavu()):
        if candidate is not None and candidate.exists() and str(candidate) not in chain:
            chain.append(str(candidate))
    if not chain:
        raise ValueError(f"no font available: pass font_path, or restore the bundled font {BUNDLED_CJK_FONT}")
    return tuple(chain)


def _runs(text: str, chain: tuple[str, ...]) -> list[tuple[str, str]]:
    """Split ``text`` into ``(font, substring)`` runs: each character goes to the first font that has it."""
    runs: list[tuple[str, str]] = []
    for ch in text:
        font = next((f for f in chain if ord(ch) in _cmap(f)), chain[0])  # tofu in the first font if none has it
        if runs and runs[-1][0] == font:
            runs[-1] = (font, runs[-1][1] + ch)
        else:
            runs.append((font, ch))
    return runs


def _text_size(text: str, size: int, chain: tuple[str, ...]) -> tuple[int, int]:
    width = sum(_truetype(f, size).getlength(s) for f, s in _runs(text, chain))
    return int(np.ceil(width)), int(round(size * 1.25))


def draw_text(
    draw: ImageDraw.ImageDraw,
    xy: tuple[int, int],
    text: str,
    *,
    size: int,
    fill: tuple[int, int, int],
    chain: tuple[str, ...],
) -> int:
    """Draw ``text`` at ``xy`` (top-left), switching fonts per character along ``chain``.

    Args:
        draw: the PIL drawing context.
        xy: top-left corner, pixels.
        text: any Unicode text (CJK and Latin mixed).
        size: font size in pixels.
        fill: RGB text colour.
        chain: fonts from ``font_chain``.

    Returns:
        The drawn width in pixels.
    """
    x, y = float(xy[0]), float(xy[1])
    start = x
    for font_file, run in _runs(text, chain):
        font = _truetype(font_file, size)
        draw.text((x, y), run, font=font, fill=fill)
        x += font.getlength(run)
    return int(np.ceil(x - start))


def _caption(draw: ImageDraw.ImageDraw, box: tuple[int, int, int, int], text: str, color: tuple[int, int, int],
             size: int, chain: tuple[str, ...], page_w: int) -> None:
    """White text on ``color`` just above ``box`` (inside the page when the box touches the top)."""
    if len(text) > _MAX_CAPTION_CHARS:
        text = text[: _MAX_CAPTION_CHARS - 1] + "\u2026"
    tw, th = _text_size(text, size, chain)
    x0 = max(0, min(box[0], page_w - tw - 4))
    y0 = box[1] - th - 2 if box[1] - th - 2 >= 0 else box[3] + 2
    draw.rectangle((x0, y0, x0 + tw + 4, y0 + th), fill=color)
    draw_text(draw, (x0 + 2, y0), text, size=size, fill=(255, 255, 255), chain=chain)


def _legend(draw: ImageDraw.ImageDraw, labels: list[str], size: int, chain: tuple[str, ...], page_w: int,
            has_links: bool) -> None:
    entries = [(label, label_color(label)) for label in labels]
    if has_links:
        entries.append(("LINK", LINK_COLOR))
    if not entries:
        return
    pad = max(4, size // 3)
    swatch = size
    width = max(_text_size(name, size, chain)[0] for name, _ in entries) + swatch + 3 * pad
    row_h = size + pad
    x0 = page_w - width - pad
    y0 = pad
    draw.rectangle((x0, y0, x0 + width, y0 + pad + row_h * len(entries)), fill=(255, 255, 255), outline=(0, 0, 0))
    for i, (name, color) in enumerate(entries):
        top = y0 + pad + i * row_h
        draw.rectangle((x0 + pad, top, x0 + pad + swatch, top + size), fill=color)
        draw_text(draw, (x0 + 2 * pad + swatch, top - size // 8), name, size=size, fill=(0, 0, 0), chain=chain)


def _center(box: tuple[int, int, int, int]) -> tuple[float, float]:
    return (box[0] + box[2]) / 2.0, (box[1] + box[3]) / 2.0


def draw_page(
    image: np.ndarray,
    ocr: PageOcr,
    kie: PageKie | None,
    *,
    font_path: str | Path | None = None,
    font_size: int | None = None,
    captions: bool = True,
) -> Image.Image:
    """Draw one page's OCR lines, SER entities and RE links on top of the page image.

    Args:
        image: the page, ``(H, W, 3)`` uint8 RGB (as decoded by the pipeline; boxes are in its pixels).
        ocr: OCR result of the page (line boxes are drawn as thin grey outlines).
        kie: SER + RE result, or ``None`` to draw OCR lines only.
        font_path: optional font tried before the bundled ones (e.g. PaddleOCR's ``simfang.ttf``).
        font_size: caption size in pixels; default ``max(12, min(H, W) // 100)`` (24 px on an A4 scan at 300 dpi).
        captions: draw ``LABEL: text`` captions above entities.

    Returns:
        A new RGB ``PIL.Image`` of the same size as ``image``.

    Raises:
        ValueError: ``image`` is not ``(H, W, 3)`` uint8, or a pair names an entity id absent from ``kie``.

    >>> import numpy as np
    >>> from schemas.records import PageOcr
    >>> draw_page(np.full((40, 60, 3), 255, np.uint8), PageOcr(60, 40, ()), None).size
    (60, 40)
    """
    if not (isinstance(image, np.ndarray) and image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.uint8):
        shape = getattr(image, "shape", None)
        dtype = getattr(image, "dtype", type(image).__name__)
        raise ValueError(f"image must be an (H, W, 3) uint8 RGB array, got shape {shape} dtype {dtype}")
    height, width = image.shape[:2]
    size = font_size if font_size is not None else max(12, min(height, width) // 100)
    if size <= 0:
        raise ValueError(f"font_size must be positive, got {font_size}")
    chain = font_chain(font_path)
    base = Image.fromarray(image, mode="RGB")
    stroke = max(1, size // 8)

    entities = kie.entities if kie is not None else ()
    by_id = {e.entity_id: e for e in entities}

    # 1. Tint entity boxes: blend a layer with filled boxes into the page (PaddleOCR blends the whole picture).
    if entities:
        layer = base.copy()
        layer_draw = ImageDraw.Draw(layer)
        for ent in entities:
            layer_draw.rectangle(ent.box, fill=label_color(ent.label))
        picture = Image.blend(base, layer, _BLEND_ALPHA)
    else:
        picture = base.copy()
    draw = ImageDraw.Draw(picture)

    # 2. OCR lines, thin.
    for line in ocr.lines:
        draw.polygon([tuple(p) for p in line.polygon], outline=LINE_COLOR, width=1)

    # 3. Entity outlines, then RE links, then captions on top of both.
    for ent in entities:
        draw.rectangle(ent.box, outline=label_color(ent.label), width=stroke)
    pairs = kie.pairs if kie is not None else ()
    for pair in pairs:
        if pair.question_id not in by_id or pair.answer_id not in by_id:
            raise ValueError(f"pair {pair} names an entity id not on the page (ids {sorted(by_id)})")
        q, a = _center(by_id[pair.question_id].box), _center(by_id[pair.answer_id].box)
        draw.line([q, a], fill=LINK_COLOR, width=max(2, stroke + 1))
        for cx, cy in (q, a):
            r = stroke + 2
            draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=LINK_COLOR)
    if captions:
        for ent in entities:
            _caption(draw, ent.box, f"{ent.label}: {ent.text}", label_color(ent.label), size, chain, width)

    labels = sorted({e.label for e in entities}, key=lambda lb: (lb not in LABEL_COLORS, lb))
    _legend(draw, labels, size, chain, width, has_links=bool(pairs))
    return picture
