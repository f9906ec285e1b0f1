"""The decode layer over the generated hostile corpus: every file decodes or fails with its expected reason."""

from __future__ import annotations

import io
import pickle
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import hostile_corpus
import numpy as np
import pypdfium2 as pdfium
import pytest
from PIL import Image, ImageFile

from transforms.decode import (
    DECODE_ERROR_REASONS,
    DecodeError,
    DecodeLimits,
    decode_document,
    decode_page,
    probe_document,
    sniff_format,
)

pytestmark = [
    pytest.mark.timeout(30),
    pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning"),
]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, dict[str, str | None]]:
    folder = tmp_path_factory.mktemp("hostile corpus ü")
    return folder, hostile_corpus.write_hostile_corpus(folder)


def _read(corpus, name: str) -> bytes:
    return (corpus[0] / name).read_bytes()


def test_corpus_is_broad_and_small(corpus):
    folder, expected = corpus
    assert len(expected) >= 20
    assert sorted(p.name for p in folder.iterdir()) == sorted(expected)
    assert sum(p.stat().st_size for p in folder.iterdir()) < 2 * 1024 * 1024
    bad_reasons = {r for r in expected.values() if r is not None}
    assert bad_reasons <= DECODE_ERROR_REASONS
    # every reason a whole file can produce is exercised (page_* reasons need a page index)
    assert bad_reasons == DECODE_ERROR_REASONS - {"too_large_file", "page_out_of_range", "page_over_cap"}
    assert sum(r is None for r in expected.values()) >= 15


@pytest.mark.parametrize("name", sorted(hostile_corpus._files()))
def test_every_corpus_file_decodes_or_fails_with_its_reason(corpus, name):
    data = _read(corpus, name)
    want = corpus[1][name]
    if want is None:
        info = probe_document(data)
        pages = decode_document(data)
        assert len(pages) == info.pages_to_process == info.page_count >= 1
        for page in pages:
            assert page.dtype == np.uint8 and page.ndim == 3 and page.shape[2] == 3
            assert page.flags["C_CONTIGUOUS"]
            assert min(page.shape[:2]) >= DecodeLimits().min_side
        if name in hostile_corpus.EXPECTED_PAGE_SHAPES:
            assert [p.shape[:2] for p in pages] == hostile_corpus.EXPECTED_PAGE_SHAPES[name]
    else:
        with pytest.raises(DecodeError) as err:
            decode_document(data)
        assert err.value.reason == want, err.value.message
        with pytest.raises(DecodeError) as err0:
            decode_page(data, 0)
        assert err0.value.reason == want


def test_probe_rejects_bombs_from_the_header_alone(corpus):
    for name in ("bomb_30000x30000.png", "bomb_9500x9500.png"):
        with pytest.raises(DecodeError) as err:
            probe_document(_read(corpus, name))
        assert err.value.reason == "too_many_pixels"


def test_probe_formats(corpus):
    got = {n: probe_document(_read(corpus, n)).format for n in ("cmyk.jpg", "bitmap.bmp", "lossless.webp",
                                                                "animated.gif", "actually_a_pdf.jpg",
                                                                "actually_a_jpeg.png", "multipage_3.tiff")}
    assert got == {"cmyk.jpg": "jpeg", "bitmap.bmp": "bmp", "lossless.webp": "webp", "animated.gif": "gif",
                   "actually_a_pdf.jpg": "pdf", "actually_a_jpeg.png": "jpeg", "multipage_3.tiff": "tiff"}
    assert probe_document(_read(corpus, "multipage_3.tiff")).page_count == 3
    assert sniff_format(b"plain text") is None


def test_exif_orientation_is_applied(corpus):
    page = decode_page(_read(corpus, hostile_corpus.EXIF_ROTATED), 0)
    assert page.shape == (120, 80, 3)  # stored landscape, displayed portrait
    # the red block stored top-left is displayed top-right after a 90 degree clockwise turn
    top_right, top_left = page[:25, -25:].astype(int), page[:25, :25].astype(int)
    assert top_right[..., 0].mean() > 200 and top_right[..., 1].mean() < 60
    assert top_left.mean() > 230  # white


def test_alpha_is_composited_on_white(corpus):
    page = decode_page(_read(corpus, "rgba_transparent.png"), 0)
    assert (page[:, :60] == 0).all() and (page[:, 60:] == 255).all()
    pal = decode_page(_read(corpus, "palette_transparent.png"), 0)
    assert pal.shape == (160, 120, 3)


def test_sixteen_bit_grayscale_is_scaled_not_clipped(corpus):
    page = decode_page(_read(corpus, "grayscale_16bit.png"), 0)
    expected = np.rint(np.linspace(0, 65535, 256) / 257).astype(np.uint8)
    assert np.abs(page[0, :, 0].astype(int) - expected).max() <= 1
    assert (page[..., 0] == page[..., 2]).all()


def test_cmyk_jpeg_comes_out_red(corpus):
    page = decode_page(_read(corpus, "cmyk.jpg"), 0).astype(int)
    r, g, b = page[..., 0].mean(), page[..., 1].mean(), page[..., 2].mean()
    assert r > 200 and g < 60 and b < 60


def test_text_pages_are_not_blank(corpus):
    for name in ("grayscale.png", "bilevel_1bit.png", "bitmap.bmp", "lossless.webp", "multipage_3.pdf"):
        for page in decode_document(_read(corpus, name)):
            assert (page < 128).any() and (page > 200).mean() > 0.5, name
    assert (decode_page(_read(corpus, "blank_white_page.png"), 0) == 255).all()


def test_encrypted_pdf_is_genuinely_encrypted(corpus):
    data = _read(corpus, "encrypted_user_password.pdf")
    with pytest.raises(pdfium.PdfiumError):
        pdfium.PdfDocument(data)
    pdf = pdfium.PdfDocument(data, password="secret")
    try:
        assert len(pdf) == 1
        assert "Secret" in pdf[0].get_textpage().get_text_range()
    finally:
        pdf.close()


def test_truncation_is_caught_even_when_pillow_is_told_to_accept_it(corpus, monkeypatch):
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    for name in ("truncated_half.jpg", "truncated_half.png", "png_without_iend.png"):
        with pytest.raises(DecodeError) as err:
            decode_page(_read(corpus, name), 0)
        assert err.value.reason == "truncated"


def test_byte_and_page_limits(corpus):
    data = _read(corpus, "multipage_3.tiff")
    with pytest.raises(DecodeError) as err:
        probe_document(data, limits=DecodeLimits(max_bytes=100))
    assert err.value.reason == "too_large_file"
    with pytest.raises(DecodeError) as err:
        decode_page(data, 3)
    assert err.value.reason == "page_out_of_range"
    with pytest.raises(DecodeError) as err:
        decode_page(data, -1)
    assert err.value.reason == "page_out_of_range"
    with pytest.raises(DecodeError) as err:
        decode_page(data, 1, limits=DecodeLimits(max_pages=1))
    assert err.value.reason == "page_over_cap"
    with pytest.raises(DecodeError) as err:
        decode_page(data, 2, limits=DecodeLimits(max_pixels=20_000))  # the 150x200 frame is over
    assert err.value.reason == "too_many_pixels"
    assert decode_page(bytearray(data), 1).shape == (160, 120, 3)


def test_decode_error_is_a_picklable_value_error():
    err = DecodeError("truncated", "cut short")
    assert isinstance(err, ValueError)
    back = pickle.loads(pickle.dumps(err))
    assert (back.reason, back.message, str(back)) == ("truncated", "cut short", "truncated: cut short")
    with pytest.raises(ValueError, match="unknown decode error reason 'nope'"):
        DecodeError("nope", "x")


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"max_bytes": 0}, "max_bytes"),
        ({"max_pixels": -5}, "max_pixels"),
        ({"min_side": 2.5}, "min_side"),
        ({"max_pages": True}, "max_pages"),
        ({"pdf_dpi": 5000}, "pdf_dpi"),
        ({"min_side": 100, "max_pixels": 50}, "min_side=100"),
    ],
)
def test_limits_are_validated(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DecodeLimits(**kwargs)


def test_a_pdf_with_one_bad_page_fails_only_that_page():
    # the page tree lists itself as a kid: PDFium counts 2 pages, the second cannot be loaded
    data = hostile_corpus.build_pdf(
        [
            b"<< /Type /Catalog /Pages 2 0 R >>",
            b"<< /Type /Pages /Kids [3 0 R 2 0 R] /Count 2 >>",
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 72 72] >>",
        ]
    )
    assert probe_document(data).page_count == 2
    assert decode_page(data, 0).shape == (200, 200, 3)
    with pytest.raises(DecodeError) as err:
        decode_page(data, 1)
    assert err.value.reason == "corrupt_pdf"


def test_a_tiff_whose_frames_loop_does_not_hang():
    buf = io.BytesIO()
    Image.new("L", (40, 40), 255).save(buf, "TIFF")
    tiff = bytearray(buf.getvalue())
    ifd = int.from_bytes(tiff[4:8], "little")
    next_ptr = ifd + 2 + 12 * int.from_bytes(tiff[ifd : ifd + 2], "little")
    tiff[next_ptr : next_ptr + 4] = ifd.to_bytes(4, "little")  # the first frame's "next frame" is itself
    assert probe_document(bytes(tiff)).page_count == 1
    assert [p.shape for p in decode_document(bytes(tiff))] == [(40, 40, 3)]


def test_pdf_decoding_from_many_threads_matches_one_thread(corpus):
    # PDFium is not thread-safe; Beam calls us from several threads of one process
    docs = [_read(corpus, n) for n in ("multipage_3.pdf", "encrypted_owner_only.pdf", "actually_a_pdf.jpg")]
    jobs = [(d, i) for d in docs for i in range(probe_document(d).page_count)] * 4
    limits = DecodeLimits(pdf_dpi=72)
    serial = [decode_page(d, i, limits=limits) for d, i in jobs]
    with ThreadPoolExecutor(max_workers=4) as pool:
        threaded = list(pool.map(lambda job: decode_page(job[0], job[1], limits=limits), jobs))
    assert all(np.array_equal(a, b) for a, b in zip(serial, threaded))


def test_the_whole_corpus_decodes_in_bounded_memory(corpus):
    # a separate process, so the peak RSS belongs to the decoding alone; the 30000x30000 bomb would need 900 MB
    script = (
        "import resource, sys, pathlib\n"
        "from transforms.decode import DecodeError, decode_document\n"
        "base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "for p in sorted(pathlib.Path(sys.argv[1]).iterdir()):\n"
        "    try:\n"
        "        decode_document(p.read_bytes())\n"
        "    except DecodeError:\n"
        "        pass\n"
        "print(base, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n"
    )
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", script, str(corpus[0])], cwd=root, capture_output=True, text=True,
        timeout=25, check=True,
    )
    base_kib, peak_kib = map(int, out.stdout.split())
    assert peak_kib - base_kib < 200 * 1024, f"decoding the corpus grew the peak RSS by {peak_kib - base_kib} KiB"


@pytest.mark.parametrize(
    "array, want",
    [
        (np.full((20, 30), 65535, np.uint16), 255),  # I;16 TIFF
        (np.full((20, 30), 32896, np.int32), 128),  # I holding 16-bit values (32896 = 128 * 257)
        (np.full((20, 30), 200, np.int32), 200),  # I holding 8-bit values
        (np.full((20, 30), 0.5, np.float32), 128),  # F in 0..1
    ],
)
def test_wide_sample_tiffs_are_scaled_to_eight_bits(array, want):
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, "TIFF")
    page = decode_page(buf.getvalue(), 0)
    assert page.shape == (20, 30, 3) and page.dtype == np.uint8
    assert abs(int(page[0, 0, 0]) - want) <= 1 and (page == page[0, 0, 0]).all()
