"""Operator and analyst commands over an extraction output folder: ``inspect``, ``check`` and ``visualize``.

The work lives in one module per job: :mod:`pipelines.output_reader` (reading tables back),
:mod:`pipelines.inspect_summary` (``inspect``), :mod:`pipelines.accounting` (``check``), :mod:`pipelines.visualize`
(one page's records and pixels) and :mod:`pipelines.table_docs` (the analysts' table reference and queries).
"""

from __future__ import annotations

import argparse
import json
import sys

from pipelines.accounting import check_output
from pipelines.inspect_summary import format_inspect, inspect_output
from pipelines.output_reader import list_runs
from pipelines.visualize import load_page, page_records, run_models

__all__ = ["add_subcommands", "main"]


def _cmd_visualize(args: argparse.Namespace) -> int:
    from transforms.visualize import draw_page

    if args.image:
        rgb = load_page(args.image, args.page_no, None)
        ocr, kie = run_models(rgb, args.ser_model_dir, args.re_model_dir)
    elif args.output and args.doc_id:
        uri, _, ocr, kie = page_records(args.output, args.doc_id, args.page_no, args.run_id)
        rgb = load_page(uri, args.page_no, (ocr.width, ocr.height))
    else:
        raise ValueError("visualize needs --image PATH, or --output OUT with --doc_id ID")
    draw_page(rgb, ocr, kie, font_path=args.font_path).save(args.out)
    print(f"wrote {args.out} ({len(ocr.lines)} lines, {len(kie.entities) if kie else 0} entities, "
          f"{len(kie.pairs) if kie else 0} pairs)")
    return 0


def _cmd_inspect(args: argparse.Namespace) -> int:
    summary = inspect_output(args.output, args.run_id)
    print(json.dumps(summary, indent=2, ensure_ascii=False) if args.json else format_inspect(summary))
    return 0


def _cmd_check(args: argparse.Namespace) -> int:
    problems = check_output(args.output, args.run_id, args.expected_documents)
    if not problems:
        print(f"OK {args.output}: accounting invariant and references hold for {len(list_runs(args.output))} run(s)")
        return 0
    print(f"FAILED {args.output}: {len(problems)} violation(s)")
    for p in problems:
        print(f"  - {p}")
    return 1


def add_subcommands(subparsers: argparse._SubParsersAction) -> None:
    """Register ``visualize``, ``inspect`` and ``check`` on the ``kiebeam`` parser.

    Each subparser sets ``func``: call ``sys.exit(args.func(args))`` after parsing.

    Args:
        subparsers: the object returned by ``parser.add_subparsers()``.
    """
    v = subparsers.add_parser("visualize", help="draw OCR/SER/RE results of one page to a PNG")
    v.add_argument("--output", help="output folder of an extraction run")
    v.add_argument("--doc_id", help="document to draw (with --output)")
    v.add_argument("--page_no", type=int, default=0, help="0-based page (default 0)")
    v.add_argument("--run_id", help="run to read (needed when several runs hold the document)")
    v.add_argument("--image", help="draw this image instead, running OCR (+ SER/RE with the model flags)")
    v.add_argument("--ser_model_dir", help="SER model folder (with --image)")
    v.add_argument("--re_model_dir", help="RE model folder (with --image)")
    v.add_argument("--font_path", help="font tried before the bundled CJK font")
    v.add_argument("--out", required=True, help="PNG file to write")
    v.set_defaults(func=_cmd_visualize)
    i = subparsers.add_parser("inspect", help="counts, errors, timings and models of an output folder")
    i.add_argument("output")
    i.add_argument("--run_id")
    i.add_argument("--json", action="store_true", help="print JSON instead of text")
    i.set_defaults(func=_cmd_inspect)
    c = subparsers.add_parser("check", help="verify the accounting invariant of an output folder (exit 1 if broken)")
    c.add_argument("output")
    c.add_argument("--run_id")
    c.add_argument("--expected_documents", type=int, help="number of inputs of each run, if known")
    c.set_defaults(func=_cmd_check)


def main(argv: list[str] | None = None) -> int:
    """Standalone entry point (``python -m pipelines.inspect_output``) until ``pipelines.cli`` wires these in."""
    parser = argparse.ArgumentParser(prog="kiebeam", description=__doc__)
    add_subcommands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
