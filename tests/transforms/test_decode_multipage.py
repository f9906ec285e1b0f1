"""Multi-page PDFs and TIFFs built from real XFUND pages: page counts, sizes at the DPI, content, the page cap."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from transforms.decode import DecodeError, DecodeLimits, decode_document, decode_page, probe_document

pytestmark = pytest.mark.timeout(30)

N_PAGES = 3
PDF_RESOLUTION = 75.0  # a 620x877 px page at 75 dpi is an A4 page (595 x 842 pt)


@pytest.fixture(scope="module")
def xfund_pages(xfund_zh_train: Path) -> list[Image.Image]:
    """Three real XFUND form pages, downscaled to 1/4 (620x877)."""
    pages = []
    for i in range(N_PAGES):
        with Image.open(xfund_zh_train / "image" / f"zh_train_{i}.jpg") as im:
            pages.append(im.convert("RGB").reduce(4))
    return pages


def _multi(pages: list[Image.Image], fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    pages = [p.copy() for p in pages]  # Pillow leaves a save's encoder options on appended images: use fresh ones
    pages[0].save(buf, fmt, save_all=True, append_images=pages[1:], **kwargs)
    return buf.getvalue()


def test_xfund_jpeg_decodes_at_full_size(xfund_zh_train: Path):
    data = (xfund_zh_train / "image" / "zh_train_0.jpg").read_bytes()
    info = probe_document(data)
    assert (info.format, info.page_count, info.pages_to_process) == ("jpeg", 1, 1)
    page = decode_page(data, 0)
    assert page.shape == (3508, 2480, 3) and page.dtype == np.uint8


def test_pdf_pages_render_at_the_dpi_with_the_source_content(xfund_pages):
    data = _multi(xfund_pages, "PDF", resolution=PDF_RESOLUTION)
    info = probe_document(data)
    assert (info.format, info.page_count, info.pages_to_process, info.pages_over_cap) == ("pdf", 3, 3, 0)
    for dpi in (200, 100):
        limits = DecodeLimits(pdf_dpi=dpi)
        pages = decode_document(data, limits=limits)
        assert len(pages) == N_PAGES
        for src, page in zip(xfund_pages, pages):
            points = [side / PDF_RESOLUTION * 72 for side in src.size]  # page size in points
            want_w, want_h = (math.ceil(p * dpi / 72) for p in points)
            assert page.shape == (want_h, want_w, 3) and page.dtype == np.uint8
            # the rendered page is the source page: compare at the source resolution
            back = np.asarray(Image.fromarray(page).resize(src.size, Image.Resampling.BILINEAR), dtype=np.float32)
            assert np.abs(back - np.asarray(src, dtype=np.float32)).mean() < 12
    assert abs(pages[0].shape[1] - 827) <= 1  # A4 width at 100 dpi: 8.27 in
    assert not np.array_equal(pages[0], pages[1]) and not np.array_equal(pages[1], pages[2])
    # decode_page gives the same pixels as decode_document
    assert np.array_equal(decode_page(data, 2, limits=DecodeLimits(pdf_dpi=100)), pages[2])


def test_pdf_page_cap_counts_pages_it_skips(xfund_pages):
    data = _multi(xfund_pages, "PDF", resolution=PDF_RESOLUTION)
    limits = DecodeLimits(max_pages=2, pdf_dpi=72)
    info = probe_document(data, limits=limits)
    assert (info.page_count, info.pages_to_process, info.pages_over_cap) == (3, 2, 1)
    assert len(decode_document(data, limits=limits)) == 2
    with pytest.raises(DecodeError) as err:
        decode_page(data, 2, limits=limits)
    assert err.value.reason == "page_over_cap"
    with pytest.raises(DecodeError) as err:
        decode_page(data, 3, limits=limits)
    assert err.value.reason == "page_out_of_range"


def test_pdf_page_too_large_for_the_pixel_limit_at_the_dpi(xfund_pages):
    data = _multi(xfund_pages[:1], "PDF", resolution=PDF_RESOLUTION)
    limits = DecodeLimits(max_pixels=3_000_000)  # A4 at 200 dpi is 1654 x 2339 = 3.9 MP
    assert probe_document(data, limits=limits).page_count == 1
    with pytest.raises(DecodeError) as err:
        decode_page(data, 0, limits=limits)
    assert err.value.reason == "too_many_pixels"
    h, w, _ = decode_page(data, 0, limits=DecodeLimits(max_pixels=3_000_000, pdf_dpi=150)).shape
    assert abs(w - 1240) <= 1 and abs(h - 1754) <= 1  # A4 at 150 dpi (PDFium's float page size may round up)


@pytest.mark.parametrize("compression", ["tiff_lzw", "jpeg"])
def test_tiff_frames_are_pages(xfund_pages, compression):
    data = _multi(xfund_pages, "TIFF", compression=compression)
    info = probe_document(data)
    assert (info.format, info.page_count, info.pages_to_process) == ("tiff", 3, 3)
    pages = decode_document(data)
    assert [p.shape for p in pages] == [(877, 620, 3)] * 3
    tol = 0 if compression == "tiff_lzw" else 6
    for src, page in zip(xfund_pages, pages):
        assert np.abs(page.astype(np.float32) - np.asarray(src, dtype=np.float32)).mean() <= tol
    assert not np.array_equal(pages[0], pages[1])
    capped = decode_document(data, limits=DecodeLimits(max_pages=1))
    assert len(capped) == 1 and np.array_equal(capped[0], pages[0])
    with pytest.raises(DecodeError) as err:
        decode_page(data, 1, limits=DecodeLimits(max_pages=1))
    assert err.value.reason == "page_over_cap"


def test_tiff_frames_of_mixed_modes(xfund_pages):
    frames = [xfund_pages[0].convert("L"), xfund_pages[1].convert("1"), xfund_pages[2]]
    data = _multi(frames, "TIFF", compression="tiff_deflate")
    pages = decode_document(data)
    assert len(pages) == 3 and all(p.shape == (877, 620, 3) for p in pages)
    assert np.array_equal(pages[0][..., 0], np.asarray(frames[0]))
    assert set(np.unique(pages[1])) <= {0, 255}
