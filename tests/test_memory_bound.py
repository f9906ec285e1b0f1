"""Issue 17, item 6: an OCR predictor's memory must not depend on the order of its input sizes.

Paddle Inference on CPU keeps the buffers of every input size a native predictor has outgrown, so the recognizer's
batch widths run narrow to wide held several times the memory of the same widths run wide to narrow.
``PaddlePredictor`` rebuilds an OCR predictor that an input outgrows. Measured here with Paddle's own count of
allocated host memory (exact, unlike RSS); the end-to-end peak RSS over page orders is a benchmark row
(``bench/bench_pipeline.py --only mem_order``), too slow for the suite.
"""

from __future__ import annotations

import numpy as np

from models.paddle_infer import InferenceOptions, PaddlePredictor, _Native

_WIDTHS = (320, 480, 960)  # recognizer batch widths (text_recognizer.bucket_width buckets)


def _allocated() -> int:
    import paddle.base.core as core

    return int(core.host_memory_stat_current_value("Allocated", 0))


def _run_widths(rec_dir, widths: tuple[int, ...]) -> tuple[int, int, dict[int, np.ndarray]]:
    """``(bytes Paddle still holds after the runs, rebuilds, outputs by width)`` of a fresh Paddle recognizer."""
    before = _allocated()
    predictor = PaddlePredictor(rec_dir, InferenceOptions(backend="paddle", cpu_threads=2), role="rec",
                                extra_files=("ppocr_keys_v1.txt",))
    rng = np.random.default_rng(0)
    inputs = {w: rng.uniform(-1, 1, (6, 3, 48, w)).astype(np.float32) for w in sorted(widths)}
    outputs = {w: predictor.run([inputs[w]])[-1] for w in widths}
    held = _allocated() - before
    rebuilds = predictor.rebuilds
    del predictor
    return held, rebuilds, outputs


def test_recognizer_memory_does_not_depend_on_width_order(ocr_model_dirs):
    _, rec_dir, _ = ocr_model_dirs
    wide_first, rebuilds_wide_first, out_wide_first = _run_widths(rec_dir, tuple(reversed(_WIDTHS)))
    narrow_first, rebuilds_narrow_first, out_narrow_first = _run_widths(rec_dir, _WIDTHS)
    # Before the fix: narrow to wide held 1.07 GiB of Paddle allocations, wide to narrow 0.09 GiB.
    assert narrow_first <= 1.2 * wide_first + (32 << 20), (
        f"widths {_WIDTHS} narrow to wide held {narrow_first / 2**20:.0f} MiB, wide to narrow "
        f"{wide_first / 2**20:.0f} MiB")
    assert (rebuilds_wide_first, rebuilds_narrow_first) == (0, len(_WIDTHS) - 1)
    for w in _WIDTHS:  # a rebuilt predictor computes exactly what a fresh one does
        np.testing.assert_array_equal(out_narrow_first[w], out_wide_first[w])


def test_native_outgrown_by_any_dimension_larger_than_all_it_ran():
    native = _Native(predictor=None)
    assert not native.outgrown_by([(6, 3, 48, 1920)])  # a fresh predictor is never outgrown
    native.record([(1, 3, 960, 672)])
    assert not native.outgrown_by([(1, 3, 960, 672)])
    assert not native.outgrown_by([(1, 3, 480, 320)])
    assert native.outgrown_by([(1, 3, 672, 960)])  # wider, though not larger in pixels
    native.record([(1, 3, 672, 960)])
    assert native.largest == [(1, 3, 960, 960)]
    assert not native.outgrown_by([(1, 3, 960, 672)])  # portrait and landscape pages no longer rebuild it
