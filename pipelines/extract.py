"""Document images -> OCR -> SER -> RE -> Parquet, as one Apache Beam batch pipeline.

Local run (bundled example pages, default models, DirectRunner)::

    python -m pipelines.extract --demo
    python -m pipelines.extract --input 'scans/*.jpg' --output out/ --runner FnApiRunner

Output: ``<output>/<table>/run_id=<run_id>/version=<launch>/part-*.parquet`` for the tables of :mod:`schemas.parquet`
(documents, pages, lines, entities, pairs, errors), published all at once by the run's pointer
``<output>/_published/run_id=<run_id>.json`` (:mod:`transforms.write`).

Bounds per document (every bad input becomes a failed documents row with its reason; the job never stops for one):
``--max_bytes`` and ``--max_pixels`` (checked from headers before pixels are decoded), ``--max_pages`` (later pages
are counted, not decoded), ``--det_db_max_candidates`` (text boxes recognised per page, so OCR time and lines per
page are capped), ``--inference_timeout_secs`` (an OCR/KIE batch that takes longer fails with ``timeout``; the stuck
Paddle call cannot be interrupted in-process and keeps its thread until it returns, so this bounds latency, not CPU).
Memory per page follows from ``--max_pixels`` (3 bytes a pixel, plus the detector's resized copy).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions, SetupOptions, StandardOptions
from apache_beam.runners.runner import PipelineResult, PipelineState

from pipelines.options import ExtractConfig, ExtractOptions, probe_io, to_config
from pipelines.output_reader import read_table
from schemas.parquet import TABLES
from transforms.documents import (
    FAILED_TAG,
    HEADERS_TAG,
    DecodePageFn,
    ReadProbeFn,
    first,
    has_bytes,
    key_header,
    key_ref,
    lacks_bytes,
)
from transforms.inference import KiePageHandler, OcrPageHandler, RunPageInference, kie_needs_image
from transforms.inputs import MatchPatternFn, ReadManifestFn, read_manifest_rows
from transforms.progress import ReportProgressFn
from transforms.rows import ROW_TABLES, BuildDocumentRowFn, ToRowsFn
from transforms.write import WriteRunTables, version_dir

__all__ = ["run", "build_graph", "add_subcommand", "summarize", "main"]

_LOG = logging.getLogger(__name__)


def run(argv: list[str] | None = None, test_pipeline: beam.Pipeline | None = None) -> PipelineResult:
    """Builds and runs the extraction pipeline.

    Args:
        argv: command-line flags (:class:`pipelines.options.ExtractOptions` plus Beam's own).
        test_pipeline: a pipeline to build into (tests); its options are used instead of ``argv``'s Beam flags.

    Returns:
        The finished pipeline's result (``wait_until_finish`` has been called; a summary is printed for local
        runners).
    """
    options = PipelineOptions(argv) if argv is not None or test_pipeline is None else test_pipeline.options
    options.view_as(SetupOptions).save_main_session = False  # workers import our packages, not __main__
    if options.view_as(StandardOptions).runner is None:
        # The DirectRunner would first try to download the Prism runner (fails or stalls offline).
        options.view_as(StandardOptions).runner = "FnApiRunner"
    cfg = to_config(options)
    # Fail in seconds, before any work, when inputs cannot be listed, a wildcard matched nothing or the output
    # cannot be written (a gs:// run without network or credentials used to publish an empty run, exit 0).
    cfg = dataclasses.replace(cfg, input_count=probe_io(cfg))
    pipeline = test_pipeline or beam.Pipeline(options=options)
    build_graph(pipeline, cfg)
    result = pipeline.run()
    result.wait_until_finish()
    if cfg.local_runner and result.state == PipelineState.DONE:
        print(format_summary(summarize(cfg.output, cfg.run_id), cfg))
    return result


def build_graph(pipeline: beam.Pipeline, cfg: ExtractConfig) -> dict[str, beam.PCollection]:
    """Builds the whole extraction graph, inputs to Parquet, into ``pipeline`` (which the caller runs).

    Args:
        pipeline: the pipeline to build into (a ``TestPipeline`` in tests).
        cfg: the run's configuration (:func:`pipelines.options.to_config`).

    Returns:
        The row PCollection of every table, by table name, as it goes into ``WriteTables`` (tests ``assert_that``
        on them).
    """
    # 1. Inputs: cheap fan-out of URIs (one DocRef per input), then break fusion so work spreads out.
    refs = []
    if cfg.inputs:
        refs.append(pipeline
                    | "CreatePatterns" >> beam.Create(list(cfg.inputs))
                    | "MatchPatterns" >> beam.ParDo(MatchPatternFn())
                    | "KeyByUri" >> beam.Map(key_ref)
                    | "DropDuplicateMatches" >> beam.CombinePerKey(first)
                    | "DropKeys" >> beam.Values())
    if cfg.manifest:
        refs.append(pipeline
                    | "CreateManifest" >> beam.Create([cfg.manifest])
                    | "ReadManifest" >> beam.ParDo(ReadManifestFn()))
    docs = refs | "FlattenInputs" >> beam.Flatten() | "ReshuffleDocuments" >> beam.Reshuffle()

    # 2. Read + probe each document once: a header per document, page refs for its pages.
    probed = docs | "ReadAndProbe" >> beam.ParDo(ReadProbeFn(cfg.limits)).with_outputs(HEADERS_TAG, main="pages")
    single = probed.pages | "SinglePages" >> beam.Filter(has_bytes)
    multi = (probed.pages
             | "MultiPageRefs" >> beam.Filter(lacks_bytes)
             | "ReshufflePages" >> beam.Reshuffle())
    decoded = ((single, multi)
               | "FlattenPageRefs" >> beam.Flatten()
               | "DecodePages" >> beam.ParDo(DecodePageFn(cfg.limits)).with_outputs(FAILED_TAG, main="images"))

    # 3. Models: OCR on pixels, then SER/RE on text + boxes, page outcome in and out (failed pages pass through with
    #    their error; a batch past --inference_timeout_secs fails its pages with 'timeout').
    #    A KIE model with a visual backbone (metadata.json needs_image) also gets each page's 224x224 image from OCR.
    keep_image = cfg.kie is not None and kie_needs_image(cfg.kie.ser_model_dir, cfg.kie.re_model_dir)
    outcomes = decoded.images | "RunOcr" >> RunPageInference(OcrPageHandler(cfg.ocr, cfg.ocr_handler, keep_image),
                                                             cfg.inference_timeout_s)
    if cfg.kie is not None:
        kie = KiePageHandler(cfg.kie.ser_model_dir, cfg.kie.re_model_dir, cfg.kie.inference, cfg.kie_handler)
        outcomes = outcomes | "RunKie" >> RunPageInference(kie, cfg.inference_timeout_s)
    outcomes = (outcomes, decoded[FAILED_TAG]) | "FlattenOutcomes" >> beam.Flatten()
    if cfg.progress_interval_s > 0:  # a side branch: progress lines with rate and ETA for long local runs
        # No side input for the total: it would cut this step off the model stage, and the FnApiRunner runs stage
        # after stage, so every line would come at the end. The launcher counts the inputs instead (local runs).
        report = ReportProgressFn(cfg.launch_id, cfg.progress_interval_s, _count_inputs(cfg))
        _ = (probed[HEADERS_TAG]
             | "UnreadableDocuments" >> beam.Filter(lambda h: h.error is not None)
             | "ReportUnreadable" >> beam.ParDo(report))
        _ = outcomes | "ReportProgress" >> beam.ParDo(report)

    # 4. Rows: per page, then one documents row per input (header joined with its page summaries).
    rows = outcomes | "ToRows" >> beam.ParDo(ToRowsFn(cfg.run_id)).with_outputs(*ROW_TABLES, main="summaries")
    documents = (
        {"headers": probed[HEADERS_TAG] | "KeyHeaders" >> beam.Map(key_header),
         "pages": rows.summaries}
        | "JoinDocumentPages" >> beam.CoGroupByKey()
        | "BuildDocumentRows" >> beam.ParDo(BuildDocumentRowFn(cfg.run_id, cfg.kie is not None)).with_outputs(
            "errors", main="documents"))
    tables = {name: rows[name] for name in ROW_TABLES if name != "errors"}
    tables["documents"] = documents.documents
    tables["errors"] = (rows.errors, documents.errors) | "FlattenErrors" >> beam.Flatten()

    # 5. Parquet: each table into this launch's version= folder, then one pointer flip publishes them all.
    _ = tables | "WriteTables" >> WriteRunTables(cfg.output, cfg.run_id, cfg.launch_id)
    return tables


def _count_inputs(cfg: ExtractConfig) -> int:
    """How many inputs the run has (0 if unknown), counted on the launcher for progress lines of local runs."""
    if not cfg.local_runner:
        return 0
    if cfg.input_count is not None:  # counted by the launcher's probe already
        return cfg.input_count
    try:
        total = sum(len(m.metadata_list) or ("*" not in p and "?" not in p)
                    for p, m in zip(cfg.inputs, FileSystems.match(list(cfg.inputs))))
        if cfg.manifest:
            total += sum(1 for _ in read_manifest_rows(cfg.manifest))
        return int(total)
    except Exception:  # noqa: BLE001 - progress is a nicety; the pipeline reports bad inputs itself
        return 0


def summarize(output: str, run_id: str) -> dict:
    """Counts a written run from its Parquet files.

    Args:
        output: the run's output folder / prefix.
        run_id: the run id.

    Returns:
        ``{"documents", "ok", "failed", "pages", "lines", "entities", "pairs", "errors", "kie_enabled",
        "failed_by_stage"}``.
    """
    docs = read_table(output, "documents", run_id, ["status", "error_stage", "kie_enabled", "pages_processed"]) \
        .to_pylist()
    counts = {t: read_table(output, t, run_id, ["page_no"]).num_rows for t in ("lines", "entities", "pairs", "errors")}
    failed_by_stage: dict[str, int] = {}
    for d in docs:
        if d["status"] != "ok":
            failed_by_stage[d["error_stage"]] = failed_by_stage.get(d["error_stage"], 0) + 1
    return {"documents": len(docs), "ok": sum(d["status"] == "ok" for d in docs),
            "failed": sum(d["status"] != "ok" for d in docs), "pages": sum(d["pages_processed"] or 0 for d in docs),
            **counts, "kie_enabled": any(d["kie_enabled"] for d in docs), "failed_by_stage": failed_by_stage}


def format_summary(s: dict, cfg: ExtractConfig) -> str:
    """A human-readable summary of a finished run."""
    stages = ", ".join(f"{k}: {v}" for k, v in sorted(s["failed_by_stage"].items())) or "none"
    kie = "SER+RE" if cfg.kie and cfg.kie.re_model_dir else ("SER only" if cfg.kie else "off (OCR only: no SER model)")
    where = "\n".join(f"  {t:<9} {version_dir(cfg.output, t, cfg.run_id, cfg.launch_id)}" for t in TABLES)
    return (f"kiebeam extract: run {cfg.run_id}\n"
            f"  documents {s['documents']} (ok {s['ok']}, failed {s['failed']}; failed by stage: {stages})\n"
            f"  pages {s['pages']}, lines {s['lines']}, entities {s['entities']}, key/value pairs {s['pairs']}, "
            f"errors {s['errors']}\n  KIE: {kie}\n{where}")


def add_subcommand(subparsers: argparse._SubParsersAction) -> None:
    """Registers ``kiebeam extract`` (all flags, Beam's included, are passed to :func:`run`).

    Args:
        subparsers: the ``kiebeam`` parser's subparsers.
    """
    parser = subparsers.add_parser("extract", help="document images -> OCR + SER + RE -> Parquet (Beam)",
                                   add_help=False, prefix_chars="\0")
    parser.add_argument("beam_args", nargs=argparse.REMAINDER)
    parser.set_defaults(func=lambda args: _cli(args.beam_args))


def _cli(argv: list[str]) -> int:
    if any(a in ("-h", "--help") for a in argv):
        parser = argparse.ArgumentParser(prog="kiebeam extract", description=__doc__,
                                         formatter_class=argparse.RawDescriptionHelpFormatter)
        ExtractOptions._add_argparse_args(parser)
        parser.print_help()
        return 0
    result = run(argv)
    return 0 if result.state == PipelineState.DONE else 1


def main(argv: list[str] | None = None) -> int:
    """``python -m pipelines.extract``."""
    logging.basicConfig(level=logging.WARNING)
    return _cli(sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    sys.exit(main())
