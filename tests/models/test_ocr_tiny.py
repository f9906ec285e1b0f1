"""OcrPredictor end to end on tiny models exported here with ``paddle.jit.save`` (Paddle 3: ``inference.json``).

The tiny detector is a 1x1 convolution + sigmoid that marks dark pixels as text; the tiny recognizer takes the
minimum of 8-pixel columns and says "a" for dark columns and blank for white ones. With fixed weights, the whole DB
post-processing, cropping, batching and CTC decoding run for real and have known answers.
"""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import numpy as np
import pytest

from models.integrity import ModelIntegrityError, write_sha256sums
from models.ocr import OcrConfig, OcrPredictor
from models.paddle_infer import ONEDNN_THREAD, find_program
from models.text_detector import TextDetector
from models.text_recognizer import LINEAR_BUCKETS, TextRecognizer, bucket_width

paddle = pytest.importorskip("paddle")

CHARS = ["a", "b", "c"]  # + space + blank = 5 classes


def _export_tiny_models(root: Path) -> tuple[Path, Path]:
    class TinyDet(paddle.nn.Layer):
        def __init__(self) -> None:
            super().__init__()
            self.conv = paddle.nn.Conv2D(3, 1, 1)

        def forward(self, x):
            return paddle.nn.functional.sigmoid(self.conv(x))  # (B, 1, H, W)

    class TinyRec(paddle.nn.Layer):
        def __init__(self) -> None:
            super().__init__()
            self.pool = paddle.nn.MaxPool2D((48, 8), (48, 8))
            self.conv = paddle.nn.Conv2D(3, len(CHARS) + 2, 1)

        def forward(self, x):
            y = self.conv(-self.pool(-x))  # min over each 48x8 column block: (B, C, 1, W/8)
            return paddle.nn.functional.softmax(paddle.squeeze(y, axis=2).transpose([0, 2, 1]), axis=2)

    det, rec = TinyDet(), TinyRec()
    # ImageNet-normalised white is about +2.3, black about -2.1: "text" = dark in channel 0, which is blue when
    # the image is BGR as PP-OCR expects (so the test below can tell whether RGB input was converted).
    det.conv.weight.set_value(np.array([-3.0, 0.0, 0.0], dtype=np.float32).reshape(1, 3, 1, 1))
    det.conv.bias.set_value(np.zeros((1,), dtype=np.float32))
    # Recognizer input: white +1, black -1, padding 0. blank wins on white and padding, "a" on black.
    w = np.zeros((len(CHARS) + 2, 3, 1, 1), dtype=np.float32)
    b = np.full((len(CHARS) + 2,), -5.0, dtype=np.float32)
    w[0], b[0] = 1.0, 0.5
    w[1], b[1] = -1.0, 0.0
    rec.conv.weight.set_value(w)
    rec.conv.bias.set_value(b)
    det_dir, rec_dir = root / "tiny_det", root / "tiny_rec"
    paddle.jit.save(det, str(det_dir / "inference"),
                    input_spec=[paddle.static.InputSpec([None, 3, None, None], "float32", "x")])
    paddle.jit.save(rec, str(rec_dir / "inference"),
                    input_spec=[paddle.static.InputSpec([None, 3, 48, None], "float32", "x")])
    (rec_dir / "ppocr_keys_v1.txt").write_text("\n".join(CHARS) + "\n", encoding="utf-8")
    write_sha256sums(det_dir)
    write_sha256sums(rec_dir)
    return det_dir, rec_dir


@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory) -> tuple[Path, Path]:
    return _export_tiny_models(tmp_path_factory.mktemp("tiny_ocr"))


@pytest.fixture(scope="module")
def tiny_predictor(tiny_dirs) -> OcrPredictor:
    det_dir, rec_dir = tiny_dirs
    return OcrPredictor(OcrConfig(det_model_dir=str(det_dir), rec_model_dir=str(rec_dir)))


def _page() -> np.ndarray:
    page = np.full((300, 400, 3), 255, dtype=np.uint8)
    page[200:240, 50:250] = 0  # lower line
    page[50:90, 60:300] = (10, 20, 30)  # upper line (dark, not pure black)
    page[120:260, 330:350] = 0  # a tall line: its crop is turned 90 degrees
    page[150:152, 150:152] = 0  # a 2x2 speck: under DB's min size
    return page


def test_tiny_models_are_exported_as_pir_json(tiny_dirs):
    for folder in tiny_dirs:
        program, params = find_program(folder)
        assert program.name == "inference.json" and params.name == "inference.pdiparams"


def test_ocr_finds_and_reads_the_dark_lines(tiny_predictor):
    [page] = tiny_predictor([_page()])
    assert (page.width, page.height) == (400, 300)
    assert [line.text for line in page.lines] == ["a", "a", "a"]
    boxes = [line.box for line in page.lines]
    # tb-yx order: upper line, tall line (top 120), lower line
    for box, (x0, y0, x1, y1) in zip(boxes, [(60, 50, 300, 90), (330, 120, 350, 260), (50, 200, 250, 240)]):
        assert box[0] <= x0 and box[1] <= y0 and box[2] >= x1 - 1 and box[3] >= y1 - 1, (box, (x0, y0, x1, y1))
        # unclip grows a box by area * 1.5 / perimeter: never more than ~30 px here
        assert x0 - box[0] < 35 and y0 - box[1] < 35 and box[2] - x1 < 35 and box[3] - y1 < 35, box
    for line in page.lines:
        assert line.score > 0.9 and line.det_score > 0.9
        xs = [p[0] for p in line.polygon]
        assert line.box[0] == int(min(xs)) and line.box[2] == int(max(xs))
    assert page.det_ms > 0 and page.rec_ms > 0


def test_rgb_input_is_fed_to_the_models_as_bgr(tiny_predictor):
    page = np.full((200, 300, 3), 255, dtype=np.uint8)
    page[30:70, 40:260] = (255, 0, 0)  # red: no blue, dark in BGR channel 0 -> text
    page[120:160, 40:260] = (0, 0, 255)  # blue: bright in BGR channel 0 -> background
    [result] = tiny_predictor([page])
    assert len(result.lines) == 1
    x0, y0, x1, y1 = result.lines[0].box
    assert y0 < 30 and 70 <= y1 < 120, result.lines[0].box


def test_drop_score_and_order_none(tiny_dirs):
    det_dir, rec_dir = tiny_dirs
    strict = OcrPredictor(OcrConfig(det_model_dir=str(det_dir), rec_model_dir=str(rec_dir), drop_score=1.0))
    assert strict([_page()])[0].lines == ()
    raw = OcrPredictor(OcrConfig(det_model_dir=str(det_dir), rec_model_dir=str(rec_dir), order_method="none"))
    tops = [line.polygon[0][1] for line in raw([_page()])[0].lines]
    assert tops == sorted(tops)


def test_batch_of_pages_matches_single_pages(tiny_predictor):
    blank = np.full((64, 96, 3), 255, dtype=np.uint8)
    pages = tiny_predictor([_page(), blank, _page()[::-1].copy()])
    assert len(pages) == 3 and pages[1].lines == ()
    assert [line.text for line in pages[0].lines] == [line.text for line in tiny_predictor([_page()])[0].lines]
    assert len(pages[2].lines) == 3
    assert tiny_predictor([]) == []


def test_threads_share_one_predictor(tiny_dirs):
    # Paddle keeps oneDNN state per calling thread: before every oneDNN call went through ONEDNN_THREAD, one of four
    # threads sometimes failed every call with a bare std::exception (14 of 950 rounds on a loaded 2-core machine).
    det_dir, rec_dir = tiny_dirs
    for _ in range(12):
        predictor = OcrPredictor(OcrConfig(det_model_dir=str(det_dir), rec_model_dir=str(rec_dir)))
        expected = predictor([_page()])[0].lines
        results: list = [None] * 4

        def work(i: int, predictor: OcrPredictor = predictor, results: list = results) -> None:
            results[i] = predictor([_page()])[0].lines

        threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert all(r == expected for r in results)


def test_onednn_work_runs_on_one_thread_whoever_calls():
    seen: set[int] = set()

    def where() -> int:
        seen.add(threading.get_ident())
        return ONEDNN_THREAD.call(threading.get_ident)  # a nested call runs at once, on the same thread

    callers = [threading.Thread(target=ONEDNN_THREAD.call, args=(where,)) for _ in range(4)]
    for t in callers:
        t.start()
    for t in callers:
        t.join()
    assert len(seen) == 1 and threading.get_ident() not in seen
    assert ONEDNN_THREAD.call(where) in seen
    with pytest.raises(ZeroDivisionError):
        ONEDNN_THREAD.call(lambda: 1 // 0)


@pytest.mark.parametrize("image, message", [
    (np.zeros((0, 10, 3), dtype=np.uint8), "empty"),
    (np.zeros((1, 1, 3), dtype=np.uint8), "too small"),
    (np.zeros((10, 10, 3), dtype=np.float32), "dtype float32"),
    (np.zeros((10, 10), dtype=np.uint8), "not \\(H, W, 3\\)"),
    (np.zeros((10, 10, 4), dtype=np.uint8), "not \\(H, W, 3\\)"),
    ([[0, 0, 0]], "numpy array"),
])
def test_bad_images_are_rejected(tiny_predictor, image, message):
    with pytest.raises(ValueError, match=message):
        tiny_predictor([np.full((8, 8, 3), 255, dtype=np.uint8), image])


def test_det_folder_given_as_rec_is_rejected(tiny_dirs):
    det_dir, rec_dir = tiny_dirs
    with pytest.raises(ValueError, match="not a CTC text recognizer"):
        TextRecognizer(det_dir, rec_dir / "ppocr_keys_v1.txt")


def test_rec_folder_given_as_det_is_rejected(tiny_dirs):
    _, rec_dir = tiny_dirs
    with pytest.raises(ValueError, match="detect"):
        TextDetector(rec_dir)


def test_dictionary_that_does_not_fit_the_model_is_rejected(tiny_dirs, tmp_path):
    _, rec_dir = tiny_dirs
    longer = tmp_path / "keys.txt"
    longer.write_text("a\nb\nc\nd\n", encoding="utf-8")
    with pytest.raises(ValueError, match="predicts 5 classes but dictionary"):
        TextRecognizer(rec_dir, longer)
    with pytest.raises(ValueError, match="does not exist"):
        TextRecognizer(rec_dir, tmp_path / "missing.txt")


def test_bad_model_folders_are_rejected(tiny_dirs, tmp_path):
    det_dir, _ = tiny_dirs
    with pytest.raises(ValueError, match="does not exist"):
        TextDetector(tmp_path / "nowhere")
    no_program = tmp_path / "no_program"
    shutil.copytree(det_dir, no_program)
    (no_program / "inference.json").unlink()
    with pytest.raises(ValueError, match="no program file"):
        TextDetector(no_program)
    unverified = tmp_path / "unverified"
    shutil.copytree(det_dir, unverified)
    (unverified / "SHA256SUMS").unlink()
    with pytest.raises(ModelIntegrityError, match="no SHA256SUMS"):
        TextDetector(unverified)
    tampered = tmp_path / "tampered"
    shutil.copytree(det_dir, tampered)
    with open(tampered / "inference.pdiparams", "ab") as f:
        f.write(b"\0")
    with pytest.raises(ModelIntegrityError, match="checksum mismatch"):
        TextDetector(tampered)


def test_bucket_width_is_bounded_and_never_narrower():
    assert bucket_width(500, 0) == 500  # 0: PaddleOCR's exact widths
    assert [bucket_width(w, 160) for w in (1, 320, 321, 1280, 1281, 2560, 2561)] == [160, 320, 480, 1280, 1600,
                                                                                    2560, 3200]
    widths = {bucket_width(w, 160) for w in range(320, 20000)}
    assert all(w >= 320 for w in widths) and len(widths) < 40  # ~19680 exact widths -> a logarithmic few
    assert all(bucket_width(w, 160) - w < max(160, 2 * w / LINEAR_BUCKETS) for w in range(1, 20000))
    with pytest.raises(ValueError, match="-1"):
        bucket_width(100, -1)
    with pytest.raises(ValueError, match="rec_width_bucket must be >= 0"):
        OcrConfig(rec_width_bucket=-5)


@pytest.mark.parametrize("bucket, pad", [(0, False), (160, False), (160, True)])
def test_recognizer_input_shapes_stay_in_the_bucket_set(tiny_dirs, bucket, pad):
    """Many distinct crop widths: with a bucket the real model sees only bucket widths (and one batch size)."""
    _, rec_dir = tiny_dirs
    rec = TextRecognizer(rec_dir, rec_dir / "ppocr_keys_v1.txt", batch_num=4, width_bucket=bucket, pad_batch=pad)
    shapes: list[tuple[int, ...]] = []
    real_run = rec.predictor.run

    def recording_run(inputs):  # records what reaches the real Paddle predictor, then runs it
        shapes.append(tuple(inputs[0].shape))
        return real_run(inputs)

    rec.predictor.run = recording_run
    crops = []
    for w in range(100, 1200, 7):  # 158 crop widths: 40 batches, nearly each a new exact width
        crop = np.full((48, w, 3), 255, dtype=np.uint8)
        crop[:, 8:w - 8] = 0  # dark text between white margins: the tiny model reads "a"
        crops.append(crop)
    results = rec(crops)
    widths = {s[3] for s in shapes}
    if bucket:
        assert widths <= {160 * k for k in range(2, 9)}, sorted(widths)
    else:
        assert len(widths) > 30  # PaddleOCR's exact widths: the unbounded case the bucket exists for
    assert len(crops) % 4 and {s[0] for s in shapes} == ({4} if pad else {4, len(crops) % 4})  # a short tail
    assert len(results) == len(crops) and all(text == "a" and conf > 0.9 for text, conf in results)
