"""Progress lines of long local runs: the formatting, and the lines a real pipeline run prints."""

from __future__ import annotations

import shutil

import pytest

from pipelines.extract import run
from transforms.progress import ReportProgressFn, format_progress


@pytest.mark.parametrize("done, failed, total, elapsed, want", [
    (30, 1, 90, 60.0, "30 pages done (1 failed) of ~90 documents, 0.50 pages/s, ETA 2m00s"),
    (10, 0, 10, 5.0, "10 pages done (0 failed) of ~10 documents, 2.00 pages/s, ETA 0s"),
    (1, 0, 7201, 1.0, "1 pages done (0 failed) of ~7201 documents, 1.00 pages/s, ETA 2h00m"),
    (0, 0, 5, 0.0, "0 pages done (0 failed) of ~5 documents, 0.00 pages/s, ETA -"),
    (4, 1, 0, 2.0, "4 pages done (1 failed), 2.00 pages/s"),
])
def test_format_progress(done, failed, total, elapsed, want):
    assert format_progress(done, failed, total, elapsed) == want


def test_interval_must_be_positive():
    with pytest.raises(ValueError, match="interval_s"):
        ReportProgressFn("launch", 0)


def test_pipeline_prints_progress_with_rate_and_eta(tmp_path, capfd):
    # Two tiny real images (one blank, one bad file): OCR only, so the run takes seconds.
    from PIL import Image

    Image.new("RGB", (64, 48), "white").save(tmp_path / "blank.png")
    (tmp_path / "bad.png").write_bytes(b"not an image")
    shutil.copy(tmp_path / "blank.png", tmp_path / "blank2.png")
    run([f"--input={tmp_path / '*.png'}", f"--output={tmp_path / 'out'}", "--ser_model_dir=none",
         "--progress_interval_secs=0.001", "--runner=FnApiRunner"])
    lines = [x for x in capfd.readouterr().out.splitlines() if x.startswith("kiebeam progress:")]
    assert lines, "no progress line printed"
    assert lines[-1].startswith("kiebeam progress: 3 pages done (1 failed) of ~3 documents, ")
    assert "pages/s, ETA 0s [pid " in lines[-1]
