"""A generated corpus of bad and odd input files for the decode layer and the pipeline tests.

``write_hostile_corpus(folder)`` writes every file (nothing is downloaded) and returns
``{file name: expected DecodeError reason, or None when the file must decode}``. The corpus is small (well under
2 MB) and builds in well under a second, so pipeline tests can run over all of it.

Known shapes (with the default :class:`transforms.decode.DecodeLimits`) are in :data:`EXPECTED_PAGE_SHAPES`.
"""

from __future__ import annotations

import hashlib
import io
import random
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

__all__ = [
    "EXPECTED_PAGE_SHAPES",
    "EXIF_ROTATED",
    "build_pdf",
    "encrypted_pdf_bytes",
    "text_page",
    "write_hostile_corpus",
]

EXIF_ROTATED = "exif_rotated_orientation6.jpg"
# name -> (H, W) of every page that decodes, with the default limits (PDF pages at 200 dpi).
EXPECTED_PAGE_SHAPES: dict[str, list[tuple[int, int]]] = {
    EXIF_ROTATED: [(120, 80)],  # stored 120 wide x 80 tall; orientation 6 makes it 80 wide x 120 tall
    "multipage_3.tiff": [(160, 120), (160, 120), (200, 150)],
    "multipage_3.pdf": [(400, 300)] * 3,  # 108 x 144 pt at 200 dpi
    "scan with spaces ünïcödé 文档.png": [(160, 120)],
    "grayscale_16bit.png": [(64, 256)],
}

_PDF_PASSWORD_PAD = bytes.fromhex("28BF4E5E4E758A4164004E56FFFA01082E2E00B6D0683E802F0CA9FE6453697A")


def text_page(width: int, height: int, lines: list[str], *, mode: str = "RGB", seed: int = 0) -> Image.Image:
    """Returns a white page with black text lines (a stand-in for a scanned form).

    Args:
        width: page width in pixels.
        height: page height in pixels.
        lines: text lines, drawn top to bottom.
        mode: Pillow mode of the result.
        seed: moves the text so pages with the same lines still differ.

    Returns:
        The page image.
    """
    im = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(im)
    font = ImageFont.load_default(size=max(8, height // 12))
    y = 4 + seed % 7
    for line in lines:
        draw.text((4 + seed % 5, y), line, fill="black", font=font)
        y += max(10, height // 10)
    return im.convert(mode)


def _save(im: Image.Image, fmt: str, **kwargs: object) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kwargs)
    return buf.getvalue()


def build_pdf(objects: list[bytes], *, trailer_extra: bytes = b"") -> bytes:
    """Assembles a PDF with a correct xref table from object bodies (object 1 must be the catalog).

    Args:
        objects: the bodies of objects 1..N (``<< ... >>`` or ``<< ... >> stream ... endstream``).
        trailer_extra: extra trailer entries, e.g. ``b"/Encrypt 5 0 R /ID [<..><..>]"``.

    Returns:
        The PDF file's bytes.
    """
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % off for off in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R %s >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, trailer_extra, xref)
    return bytes(out)


def _one_page_pdf(media_box: bytes, content: bytes) -> list[bytes]:
    return [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox " + media_box + b" /Contents 4 0 R"
        b" /Resources << /Font << /F1 6 0 R >> >> >>",
        b"<< /Length %d >> stream\n" % len(content) + content + b"\nendstream",
    ]


def _rc4(key: bytes, data: bytes) -> bytes:
    s = list(range(256))
    j = 0
    for i in range(256):
        j = (j + s[i] + key[i % len(key)]) % 256
        s[i], s[j] = s[j], s[i]
    out = bytearray()
    i = j = 0
    for byte in data:
        i = (i + 1) % 256
        j = (j + s[i]) % 256
        s[i], s[j] = s[j], s[i]
        out.append(byte ^ s[(s[i] + s[j]) % 256])
    return bytes(out)


def encrypted_pdf_bytes(user_password: bytes, owner_password: bytes = b"owner", text: bytes = b"Secret") -> bytes:
    """Returns a one-page PDF encrypted with the Standard security handler (RC4 40-bit, revision 2).

    Implements the PDF 1.4 spec's algorithms 3.2 (file key), 3.3 (/O) and 3.4 (/U) so the file is genuinely
    encrypted: PDFium opens it with ``user_password`` (an empty user password opens without asking).

    Args:
        user_password: password needed to open the file (b"" for none).
        owner_password: the owner password.
        text: text shown on the page (its content stream is encrypted).

    Returns:
        The PDF file's bytes.
    """
    permissions = -44
    file_id = hashlib.md5(b"kiebeam hostile corpus").digest()
    owner_key = hashlib.md5((owner_password + _PDF_PASSWORD_PAD)[:32]).digest()[:5]
    o_entry = _rc4(owner_key, (user_password + _PDF_PASSWORD_PAD)[:32])
    key = hashlib.md5(
        (user_password + _PDF_PASSWORD_PAD)[:32] + o_entry + struct.pack("<i", permissions) + file_id
    ).digest()[:5]
    u_entry = _rc4(key, _PDF_PASSWORD_PAD)
    content = b"BT /F1 36 Tf 72 720 Td (" + text + b") Tj ET"
    object_key = hashlib.md5(key + (4).to_bytes(3, "little") + b"\x00\x00").digest()[:10]
    objects = _one_page_pdf(b"[0 0 612 792]", _rc4(object_key, content))
    objects.append(
        b"<< /Filter /Standard /V 1 /R 2 /O <" + o_entry.hex().encode() + b"> /U <" + u_entry.hex().encode()
        + b"> /P %d >>" % permissions
    )
    objects.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    trailer = b"/Encrypt 5 0 R /ID [<" + file_id.hex().encode() + b"> <" + file_id.hex().encode() + b">]"
    return build_pdf(objects, trailer_extra=trailer)


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def _bilevel_png_bomb(side: int) -> bytes:
    """A valid all-black 1-bit PNG of side x side pixels in a few hundred KB (a decompression bomb)."""
    row = bytes(1 + (side + 7) // 8)  # filter byte + packed bits
    rows_per_piece = 1000
    # Raw deflate with a full flush is byte-aligned and history-free, so one compressed piece can be repeated.
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    piece = comp.compress(row * rows_per_piece) + comp.flush(zlib.Z_FULL_FLUSH)
    pieces, rest = divmod(side, rows_per_piece)
    tail = zlib.compressobj(9, zlib.DEFLATED, -15)
    tail_bytes = tail.compress(row * rest) + tail.flush(zlib.Z_FINISH)
    adler = 1
    for _ in range(pieces):
        adler = zlib.adler32(row * rows_per_piece, adler)
    adler = zlib.adler32(row * rest, adler)
    idat = b"\x78\xda" + piece * pieces + tail_bytes + struct.pack(">I", adler)
    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


def _corrupt_idat_png(png: bytes, rng: random.Random) -> bytes:
    """Keeps a PNG's valid header but replaces its pixel data with random (non-zlib) bytes, CRCs correct."""
    garbage = bytes(rng.getrandbits(8) for _ in range(500))
    return png[:33] + _png_chunk(b"IDAT", garbage) + _png_chunk(b"IEND", b"")


def _files() -> dict[str, tuple[bytes, str | None]]:
    rng = random.Random(1234)
    page = text_page(120, 160, ["INVOICE No 42", "Name: Ada", "Total: 17.50"])
    jpeg = _save(page, "JPEG", quality=80)
    png = _save(page, "PNG")

    rgba = Image.new("RGBA", (120, 160), (0, 0, 0, 0))  # transparent: must come out white
    rgba.paste((0, 0, 0, 255), (0, 0, 60, 160))  # left half opaque black
    palette = page.convert("P", palette=Image.Palette.ADAPTIVE, colors=8)
    palette.info["transparency"] = 0
    gray16 = Image.fromarray(np.tile(np.linspace(0, 65535, 256).astype(np.uint16), (64, 1)))  # mode I;16
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    stored = Image.new("RGB", (120, 80), "white")
    stored.paste((255, 0, 0), (0, 0, 30, 30))  # red block in the stored top-left corner
    tiff_pages = [text_page(120, 160, ["page one"], mode="L"), text_page(120, 160, ["page two"], mode="1"),
                  text_page(150, 200, ["page three"])]
    pdf_pages = [text_page(150, 200, [f"PDF page {i + 1}"], seed=i) for i in range(3)]
    multipage_pdf = _save(pdf_pages[0], "PDF", save_all=True, append_images=pdf_pages[1:], resolution=100.0)
    font = b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"
    text_ops = b"BT /F1 12 Tf 20 20 Td (hello) Tj ET"

    return {
        "empty.jpg": (b"", "empty_file"),
        "truncated_half.jpg": (jpeg[: len(jpeg) // 2], "truncated"),
        "truncated_half.png": (png[: len(png) // 2], "truncated"),
        "truncated_header.png": (png[:40], "truncated"),
        "png_without_iend.png": (png[:-12], "truncated"),
        "random_bytes.jpg": (bytes(rng.getrandbits(8) for _ in range(4096)), "unsupported_format"),
        "page.html.png": (b"<!DOCTYPE html><html><body><h1>404 Not Found</h1></body></html>\n", "unsupported_format"),
        "notes.txt": (b"Invoice 42\nTotal 17.50 EUR\n", "unsupported_format"),
        "drawing.svg.jpg": (b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"/>', "unsupported_format"),
        "archive.zip.png": (b"PK\x03\x04" + bytes(60), "unsupported_format"),
        "corrupt_pixel_data.png": (_corrupt_idat_png(png, rng), "corrupt_image"),
        "bmp_shorter_than_header_says.bmp": (_save(page, "BMP")[:3000], "truncated"),
        "jpeg_segment_past_end.jpg": (b"\xff\xd8\xff\xe1\xff\xf0Exif\x00\x00" + bytes(100) + b"\xff\xd9", "truncated"),
        "bomb_30000x30000.png": (_bilevel_png_bomb(30000), "too_many_pixels"),  # past Pillow's own bomb limit
        "bomb_9500x9500.png": (_bilevel_png_bomb(9500), "too_many_pixels"),  # under Pillow's, over ours
        "one_pixel.png": (_save(Image.new("RGB", (1, 1), "white"), "PNG"), "too_small"),
        "five_by_five.gif": (_save(Image.new("L", (5, 5), 255), "GIF"), "too_small"),
        "grayscale.png": (_save(page.convert("L"), "PNG"), None),
        "bilevel_1bit.png": (_save(page.convert("1"), "PNG"), None),
        "rgba_transparent.png": (_save(rgba, "PNG"), None),
        "gray_alpha_la.png": (_save(page.convert("LA"), "PNG"), None),
        "palette_transparent.png": (_save(palette, "PNG"), None),
        "cmyk.jpg": (_save(Image.new("CMYK", (120, 160), (0, 255, 255, 0)), "JPEG"), None),
        "grayscale_16bit.png": (_save(gray16, "PNG"), None),
        EXIF_ROTATED: (_save(stored, "JPEG", exif=exif.tobytes(), quality=95), None),
        "bitmap.bmp": (_save(page, "BMP"), None),
        "lossless.webp": (_save(page, "WEBP", lossless=True), None),
        "animated.gif": (_save(page.convert("P"), "GIF", save_all=True, append_images=[page.convert("P")]), None),
        "multipage_3.tiff": (_save(tiff_pages[0], "TIFF", save_all=True, append_images=tiff_pages[1:],
                                   compression="tiff_deflate"), None),
        "multipage_3.pdf": (multipage_pdf, None),
        "actually_a_pdf.jpg": (_save(page, "PDF", resolution=72.0), None),
        "actually_a_jpeg.png": (jpeg, None),
        "encrypted_user_password.pdf": (encrypted_pdf_bytes(b"secret"), "encrypted_pdf"),
        "encrypted_owner_only.pdf": (encrypted_pdf_bytes(b""), None),
        "corrupt.pdf": (b"%PDF-1.4\n" + bytes(rng.getrandbits(8) for _ in range(3000)) + b"\n%%EOF\n", "corrupt_pdf"),
        "truncated.pdf": (multipage_pdf[: len(multipage_pdf) * 6 // 10], "truncated"),
        "zero_pages.pdf": (build_pdf([b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Kids [] /Count 0 >>"]),
                           "no_pages"),
        "absurd_page_size.pdf": (build_pdf(_one_page_pdf(b"[0 0 14400 14400]", text_ops) + [b"null", font]),
                                 "too_many_pixels"),
        "scan with spaces ünïcödé 文档.png": (png, None),
        "blank_white_page.png": (_save(Image.new("RGB", (300, 400), "white"), "PNG"), None),
    }


def write_hostile_corpus(folder: str | Path) -> dict[str, str | None]:
    """Writes the hostile corpus into ``folder`` (created if needed).

    Args:
        folder: destination folder.

    Returns:
        ``{file name: expected DecodeError reason, or None when the file must decode}``.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    expected = {}
    for name, (data, reason) in _files().items():
        (folder / name).write_bytes(data)
        expected[name] = reason
    return expected
