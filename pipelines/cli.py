"""The ``kiebeam`` command line: one subcommand per capability.

    kiebeam extract    document images -> OCR + SER + RE -> Parquet (Apache Beam; `kiebeam extract --help`)
    kiebeam train      fine-tune or distil (UDML) VI-LayoutXLM for SER or RE from a shard manifest
    kiebeam evaluate   SER / RE Hmean of a checkpoint on a manifest split
    kiebeam shards     convert XFUND / FUNSD to shards, build and validate shard manifests
    kiebeam export     a checkpoint folder -> a Paddle Inference folder the pipeline runs
    kiebeam visualize  draw one page's OCR lines, entities and links to a PNG
    kiebeam inspect    counts, errors, timings and model versions of an output folder
    kiebeam check      verify that an output folder accounts for every input exactly once
"""

from __future__ import annotations

import argparse
import sys

from pipelines import console, extract, inspect_output
from training import cli as training_cli

__all__ = ["main", "build_parser"]


def _add_export(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("export", help="export a SER/RE checkpoint folder to Paddle Inference format")
    p.add_argument("checkpoint", help="checkpoint folder (kiebeam, PaddleOCR best_accuracy/ or PaddleNLP layout)")
    p.add_argument("out", help="folder to write (inference.json + inference.pdiparams + tokenizer + labels)")
    p.add_argument("--tokenizer_dir", help="tokenizer folder, for checkpoints that do not carry one")
    p.add_argument("--allow_unverified_models", action="store_true",
                   help="load a checkpoint folder that has no SHA256SUMS (only for files you trust)")
    p.set_defaults(func=_cmd_export)


def _cmd_export(args: argparse.Namespace) -> int:
    from models.checkpoint import export_inference, load_checkpoint

    ckpt = load_checkpoint(args.checkpoint, allow_unverified=args.allow_unverified_models,
                           tokenizer_dir=args.tokenizer_dir)
    out = export_inference(ckpt, args.out)
    print(f"exported {ckpt.task} model from {args.checkpoint} to {out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The ``kiebeam`` argument parser with every subcommand registered."""
    parser = argparse.ArgumentParser(prog="kiebeam", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--verbose", action="store_true",
                        help="log at INFO, keep every library warning and print tracebacks (anywhere on the line)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    extract.add_subcommand(sub)
    training_cli.add_subcommands(sub)
    _add_export(sub)
    inspect_output.add_subcommands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``kiebeam`` console script; returns the exit code (2 for bad input, 1 for a failure)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    verbose = "--verbose" in argv  # taken anywhere: `kiebeam extract ...` hands the rest of its line to Beam
    parser = build_parser()
    args = parser.parse_args((["--verbose"] if verbose else []) + [a for a in argv if a != "--verbose"])
    console.configure(verbose)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except ValueError as e:
        if verbose:
            raise
        print(f"kiebeam {args.command}: error: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # noqa: BLE001 - a failed run: one line; --verbose shows the traceback
        if verbose:
            raise
        print(f"kiebeam {args.command}: error: {console.one_line(e)} (--verbose shows the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
