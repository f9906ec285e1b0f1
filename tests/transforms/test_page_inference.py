"""RunPageInference: every page leaves a model stage with exactly one outcome, also when Beam drops a whole batch.

The graph is the same with or without ``--inference_timeout_secs``: Beam's dead-letter output is always there, and
the pages of a batch it gives up on come out as failed outcomes. Here a batch fails outside the handler's
per-page retry (a page whose OCR lines the handler's own byte count cannot read), the tiny SER model runs for
real on the good page, and a page that failed before passes through untouched.
"""

from __future__ import annotations

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline  # not collected by pytest
from apache_beam.testing.util import assert_that, equal_to

from models.paddle_infer import InferenceOptions
from schemas.errors import ErrorInfo
from schemas.records import OcrLine, PageOcr, PageOutcome
from schemas.refs import DocRef
from transforms.inference import HandlerOptions, KiePageHandler, RunPageInference


def _line(text: str, y: int) -> OcrLine:
    return OcrLine(text, 0.9, ((10.0, y), (150.0, y), (150.0, y + 20.0), (10.0, y + 20.0)), (10, y, 150, y + 20))


def _summary(o: PageOutcome) -> tuple:
    error = (o.error.stage, o.error.error_type) if o.error else None
    return o.doc.doc_key, error, o.kie is not None and o.kie_model is not None, o.image


def test_every_page_gets_one_outcome_when_beam_drops_a_batch(tiny_kie_dirs):
    ser_dir, _ = tiny_kie_dirs
    good = PageOutcome(DocRef("a", "a", "/a.png"), 0, 200, 100,
                       ocr=PageOcr(200, 100, (_line("Name:", 10), _line("Ada", 40))))
    broken = PageOutcome(DocRef("b", "b", "/b.png"), 0, 200, 100, ocr=PageOcr(200, 100, ("not an OcrLine",)))
    failed = PageOutcome(DocRef("c", "c", "/c.png"), 0, error=ErrorInfo("decode", "truncated", "cut"))
    # One page a batch (weight 1 each), so the broken page fails its batch alone.
    handler = KiePageHandler(str(ser_dir), None, InferenceOptions(), HandlerOptions(max_batch_size=1))
    with BeamTestPipeline(options=PipelineOptions(["--runner=FnApiRunner"])) as p:
        outcomes = p | beam.Create([good, broken, failed]) | "RunKie" >> RunPageInference(handler)
        assert_that(outcomes | beam.Map(_summary), equal_to([
            ("a", None, True, None),
            ("b", ("kie", "AttributeError"), False, None),  # the dead letter, as a failed page
            ("c", ("decode", "truncated"), False, None),  # failed before: untouched
        ]))
