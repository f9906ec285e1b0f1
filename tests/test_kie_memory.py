"""Issue 14: the SER/RE predictors bound their oneDNN input-shape cache by default, with unchanged predictions.

Unbounded (Paddle's default), each base-size SER/RE predictor kept about 0.3 GiB of oneDNN primitives for every
window shape (windows x 64-token length) it had run; ``KiePredictor.from_dirs`` gives them
``KIE_MKLDNN_CACHE_CAPACITY`` when the caller leaves ``mkldnn_cache_capacity`` unset. The memory itself is a
benchmark row (``bench/bench_pipeline.py --kie base --only mem_order``): on these tiny models the cache is a few
megabytes, within RSS noise.
"""

from __future__ import annotations

import pytest

from models.kie import KIE_MKLDNN_CACHE_CAPACITY, KiePredictor
from models.paddle_infer import InferenceOptions, PaddlePredictor
from schemas.records import OcrLine, PageOcr

_TEXTS = ("姓名：张三", "Name: John Smith", "Date of birth: 01/02/1990", "电话号码：13800000000", "Total 1,234.56")


def _page(n_lines: int) -> PageOcr:
    lines = []
    for i in range(n_lines):
        x0, y0 = 50 + (i % 2) * 450, 40 + i * 12
        lines.append(OcrLine(text=_TEXTS[i % len(_TEXTS)], score=0.9, box=(x0, y0, x0 + 400, y0 + 10),
                             polygon=((x0, y0), (x0 + 400, y0), (x0 + 400, y0 + 10), (x0, y0 + 10))))
    return PageOcr(width=1000, height=100 + 12 * n_lines, lines=tuple(lines))


def _capacities(kie: KiePredictor) -> tuple[int, int]:
    return kie.ser.options.mkldnn_cache_capacity, kie.re.options.mkldnn_cache_capacity


def test_kie_bounds_the_onednn_cache_unless_told(tiny_kie_dirs):
    assert KIE_MKLDNN_CACHE_CAPACITY > 0
    assert _capacities(KiePredictor.from_dirs(*tiny_kie_dirs)) == (KIE_MKLDNN_CACHE_CAPACITY,) * 2
    told = InferenceOptions(mkldnn_cache_capacity=KIE_MKLDNN_CACHE_CAPACITY + 3)
    assert _capacities(KiePredictor.from_dirs(*tiny_kie_dirs, inference=told)) == (KIE_MKLDNN_CACHE_CAPACITY + 3,) * 2


@pytest.mark.parametrize("precision", ["fp32", "auto"])  # auto: bf16 SER/RE on a CPU with avx512_bf16/AMX
def test_bounded_cache_predicts_as_paddles_unbounded_default(tiny_kie_dirs, precision):
    ser_dir, re_dir = tiny_kie_dirs
    bounded = KiePredictor.from_dirs(ser_dir, re_dir, inference=InferenceOptions(precision=precision))
    unbounded = KiePredictor.from_dirs(ser_dir, re_dir, inference=InferenceOptions(precision=precision))
    paddle_default = InferenceOptions(precision=precision)  # mkldnn_cache_capacity 0: Paddle's own (unbounded)
    unbounded.ser, unbounded.re = PaddlePredictor(ser_dir, paddle_default), PaddlePredictor(re_dir, paddle_default)
    assert _capacities(unbounded) == (0, 0) and _capacities(bounded) == (KIE_MKLDNN_CACHE_CAPACITY,) * 2
    # Twice more window shapes (token lengths, windows per page) than the bound, then again: evicted shapes return.
    sizes = [3, 9, 17, 30, 45, 70, 2, 110, 160, 25]
    assert len(sizes) > 2 * KIE_MKLDNN_CACHE_CAPACITY
    pages = [_page(n) for n in sizes * 2]
    got = [bounded([p])[0] for p in pages]
    want = [unbounded([p])[0] for p in pages]
    assert len({k.windows for k in want}) > 1 and sum(len(k.entities) for k in want) > 0
    for g, w in zip(got, want):
        assert (g.line_labels, g.line_scores, g.entities, g.pairs) == (w.line_labels, w.line_scores, w.entities,
                                                                       w.pairs)
