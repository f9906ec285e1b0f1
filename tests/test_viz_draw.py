"""transforms.visualize: picture size, boxes where the entities are, CJK glyphs that really render."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image, ImageDraw

from schemas.records import Entity, KeyValuePair, OcrLine, PageKie, PageOcr
from transforms import visualize
from transforms.visualize import BUNDLED_CJK_FONT, LABEL_COLORS, draw_page, draw_text, font_chain


def _line(text: str, box: tuple[int, int, int, int]) -> OcrLine:
    x0, y0, x1, y1 = box
    return OcrLine(text=text, score=0.9, polygon=((x0, y0), (x1, y0), (x1, y1), (x0, y1)), box=box)


def _page() -> tuple[np.ndarray, PageOcr, PageKie]:
    lines = (
        _line("姓名:", (40, 100, 160, 140)),
        _line("张三", (300, 100, 420, 140)),
        _line("备注", (40, 300, 200, 340)),
    )
    ocr = PageOcr(width=600, height=400, lines=lines)
    ents = (
        Entity(0, "QUESTION", "姓名:", (40, 100, 160, 140), 0.9, (0,)),
        Entity(1, "ANSWER", "张三", (300, 100, 420, 140), 0.9, (1,)),
    )
    kie = PageKie(line_labels=("QUESTION", "ANSWER", "O"), line_scores=(0.9, 0.9, 0.8), entities=ents,
                  pairs=(KeyValuePair(0, 1, 0.95),))
    return np.full((400, 600, 3), 255, np.uint8), ocr, kie


def _tint(px: np.ndarray, color: tuple[int, int, int]) -> bool:
    """A white pixel blended towards ``color``: the colour's strongest channel stays high, the others dropped."""
    strongest = int(np.argmax(color))
    others = [c for c in range(3) if c != strongest]
    return px[strongest] > 200 and all(px[c] < 200 for c in others)


def test_picture_has_the_page_size():
    image, ocr, kie = _page()
    assert draw_page(image, ocr, kie).size == (600, 400)
    assert draw_page(image, ocr, None).size == (600, 400)


def test_entity_boxes_are_tinted_in_their_label_colour_and_the_rest_stays_white():
    image, ocr, kie = _page()
    pic = np.asarray(draw_page(image, ocr, kie, captions=False))
    # Points inside each entity box but off the link line (which runs along y=120).
    assert _tint(pic[105, 60], LABEL_COLORS["QUESTION"]), pic[105, 60]
    assert _tint(pic[105, 400], LABEL_COLORS["ANSWER"]), pic[105, 400]
    # Outside every box, away from the legend (top right): untouched white.
    assert (pic[250, 300] == 255).all()
    assert (pic[380, 20] == 255).all()
    # The non-entity OCR line is outlined (grey) but not filled.
    assert tuple(pic[300, 100]) == visualize.LINE_COLOR
    assert (pic[320, 100] == 255).all()
    # The RE link: green between the two boxes.
    assert tuple(pic[120, 230]) == visualize.LINK_COLOR


def test_ocr_only_picture_has_no_tint():
    image, ocr, _ = _page()
    pic = np.asarray(draw_page(image, ocr, None))
    assert (pic[120, 100] == 255).all()
    assert tuple(pic[100, 100]) == visualize.LINE_COLOR


def test_captions_are_drawn_above_the_entity():
    image, ocr, kie = _page()
    with_caps = np.asarray(draw_page(image, ocr, kie, font_size=16)).astype(int)
    without = np.asarray(draw_page(image, ocr, kie, font_size=16, captions=False)).astype(int)
    changed = np.abs(with_caps - without).sum(axis=2) > 0
    ys, xs = np.nonzero(changed)
    assert len(ys) > 0
    assert ys.max() < 100 and ys.min() >= 100 - 30  # a strip just above the boxes' top edge (y=100)


def _render(text: str) -> np.ndarray:
    img = Image.new("RGB", (120, 50), (0, 0, 0))
    draw_text(ImageDraw.Draw(img), (4, 4), text, size=32, fill=(255, 255, 255), chain=font_chain())
    return np.asarray(img)[:, :, 0]


def test_cjk_glyphs_render_as_distinct_shapes_not_tofu():
    assert BUNDLED_CJK_FONT.exists(), "bundled CJK font missing"
    a, b, c = _render("姓"), _render("名"), _render("\U000f0000")  # the last is private use: tofu everywhere
    assert a.sum() > 0 and b.sum() > 0
    assert not np.array_equal(a, b)  # two different characters, two different glyphs
    assert not np.array_equal(a, c) and not np.array_equal(b, c)


def test_mixed_latin_and_cjk_use_a_font_each():
    chain = font_chain()
    runs = visualize._runs("QUESTION: 姓名", chain)
    assert "".join(s for _, s in runs) == "QUESTION: 姓名"
    font_of = {ch: f for f, s in runs for ch in s}
    assert font_of["Q"] != font_of["姓"] and font_of["姓"] == font_of["名"]
    assert not np.array_equal(_render("A"), _render("Q"))  # Latin is real glyphs too (Droid alone has none)


def test_bad_inputs_raise_value_errors_naming_the_value():
    image, ocr, kie = _page()
    with pytest.raises(ValueError, match="float32"):
        draw_page(image.astype(np.float32), ocr, kie)
    with pytest.raises(ValueError, match="nope.ttf"):
        draw_page(image, ocr, kie, font_path="nope.ttf")
    bad = PageKie(kie.line_labels, kie.line_scores, kie.entities, (KeyValuePair(0, 7, 0.5),))
    with pytest.raises(ValueError, match="entity id"):
        draw_page(image, ocr, bad)


def test_real_xfund_page_with_gold_labels(xfund_zh_train, tmp_path):
    """A real 2480x3508 scan, its gold XFUND lines as OCR + SER + RE: every entity box is tinted."""
    name, raw = (xfund_zh_train / "train.json").read_text(encoding="utf-8").splitlines()[0].split("\t", 1)
    image = np.asarray(Image.open(xfund_zh_train / "image" / name).convert("RGB"))
    items = json.loads(raw)
    lines, ents, ids = [], [], {}
    for it in items:
        xs, ys = [p[0] for p in it["points"]], [p[1] for p in it["points"]]
        box = (int(min(xs)), int(min(ys)), int(max(xs)), int(max(ys)))
        lines.append(_line(it["transcription"], box))
        if it["label"] != "other":
            ids[it["id"]] = len(ents)
            ents.append(Entity(len(ents), it["label"].upper(), it["transcription"], box, 1.0, (len(lines) - 1,)))
    pairs = {(ids[q], ids[a]) for it in items for q, a in it["linking"] if q in ids and a in ids}
    kie = PageKie(tuple("O" for _ in lines), tuple(1.0 for _ in lines), tuple(ents),
                  tuple(KeyValuePair(q, a, 1.0) for q, a in sorted(pairs)))
    pic = draw_page(image, PageOcr(image.shape[1], image.shape[0], tuple(lines)), kie)
    assert pic.size == (image.shape[1], image.shape[0])
    pic.save(tmp_path / "page.png")
    diff = np.abs(np.asarray(pic).astype(int) - image.astype(int)).sum(axis=2)
    for ent in ents:
        x0, y0, x1, y1 = ent.box
        assert diff[y0:y1, x0:x1].mean() > 10, ent  # tinted inside every entity box
