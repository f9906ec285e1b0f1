"""``kiebeam train``, ``kiebeam evaluate`` and ``kiebeam shards``: the training module's command line.

``add_subcommands(subparsers)`` registers the three commands on an ``argparse`` sub-parser set; each parsed
namespace carries ``func`` (``func(args) -> int``, the exit code). Examples::

    kiebeam shards convert-xfund /data/xfund_de/de.train.json data/de_train.txt
    kiebeam shards convert-funsd /data/funsd/training_data/annotations data/funsd_train.txt
    kiebeam shards build --labels OTHER QUESTION ANSWER HEADER --train data/de_train.txt \
        --val data/de_val.txt --out data/manifest.json
    kiebeam shards validate data/manifest.json
    kiebeam train --preset ser_vi_layoutxlm --manifest data/manifest.json --init_from ckpt/ --out_dir runs/ser
    kiebeam evaluate --checkpoint runs/ser/best --manifest data/manifest.json --split test
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

__all__ = ["add_subcommands", "train_config_from_args", "manifest_summary", "main"]


def _add_train(sub: argparse._SubParsersAction) -> None:
    from training.config import PRESETS

    p = sub.add_parser("train", help="fine-tune SER or RE (optionally UDML) from a shard manifest")
    p.add_argument("--preset", default="ser_vi_layoutxlm", choices=sorted(PRESETS))
    p.add_argument("--manifest", required=True, help="shard manifest (JSON or YAML, local or gs://)")
    p.add_argument("--out_dir", required=True)
    p.add_argument("--init_from", help="checkpoint folder to start from (default: from scratch)")
    p.add_argument("--tokenizer_dir", help="tokenizer for an --init_from folder without one")
    p.add_argument("--udml", action="store_true", help="train two peers with UDML; only the student is saved")
    p.add_argument("--resume", action="store_true", help="continue from OUT_DIR/latest")
    p.add_argument("--allow_unverified_models", action="store_true",
                   help="accept an --init_from / --resume folder without SHA256SUMS (only files you trust)")
    p.add_argument("--max_skipped_fraction", type=float,
                   help="refuse to train when more than this fraction of a split's documents is skipped "
                        "(default 0.05)")
    for name, kind in (("epochs", int), ("batch_size", int), ("learning_rate", float), ("max_steps", int),
                       ("eval_every", int), ("save_every", int), ("seed", int), ("vocab_size", int)):
        p.add_argument(f"--{name}", type=kind)
    p.add_argument("--set", action="append", default=[], metavar="KEY=JSON",
                   help="override any TrainConfig field, e.g. --set 'model={\"num_hidden_layers\": 4}'")
    p.add_argument("--quiet", action="store_true", help="no console progress (metrics.jsonl is written anyway)")
    p.add_argument("--progress_every_s", type=float, default=25.0,
                   help="seconds between two console progress lines (default 25, so a line comes at least every "
                        "30 s; 0 = every step)")
    p.add_argument("--progress_every_steps", type=int, default=0,
                   help="also print a progress line every N steps (default 0 = by time only)")
    p.add_argument("--visualdl_dir", help="also log loss, lr and eval scalars to VisualDL in this folder")
    p.set_defaults(func=_run_train)


def train_config_from_args(args: argparse.Namespace) -> Any:
    """Builds the ``TrainConfig`` of a parsed ``train`` command.

    Args:
        args: the parsed namespace.

    Returns:
        The config (preset + flags + ``--set`` overrides).
    """
    from training.config import get_preset

    changes: dict[str, Any] = {"manifest": args.manifest, "out_dir": args.out_dir}
    for name in ("init_from", "tokenizer_dir", "epochs", "batch_size", "learning_rate", "max_steps",
                 "eval_every", "save_every", "seed", "vocab_size", "max_skipped_fraction"):
        if getattr(args, name) is not None:
            changes[name] = getattr(args, name)
    if args.allow_unverified_models:
        changes["allow_unverified"] = True
    if args.udml:
        changes["udml"] = True
    if args.resume:
        changes["resume"] = True
    changes["progress"] = not args.quiet  # the command line shows progress whatever the preset says
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--set {item!r}: expected KEY=JSON")
        try:
            changes[key] = json.loads(value)
        except json.JSONDecodeError:
            changes[key] = value
    return get_preset(args.preset, **changes)


def _run_train(args: argparse.Namespace) -> int:
    config = train_config_from_args(args)
    if config.re_head == "geo":  # the geometric RE head trains on a SER model's frozen encoder
        from training.re_head import train_re_head

        print(json.dumps(train_re_head(config)))
        return 0
    from training.train import main as train_main

    result = train_main(config, progress_every_s=args.progress_every_s,
                        progress_every_steps=args.progress_every_steps, visualdl_dir=args.visualdl_dir)
    print(json.dumps(result))
    return 0


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="the KIE report of a SER (+ RE) model on a manifest split, or the Hmean "
                                        "of a training checkpoint")
    p.add_argument("--checkpoint", help="training checkpoint folder (e.g. runs/ser/best): its SER or RE Hmean with "
                                        "gold OCR; an exported folder gives the full report (as --ser_dir)")
    p.add_argument("--ser_dir", help="SER folder, exported or a checkpoint: the full report (training.report)")
    p.add_argument("--re_dir", help="RE folder (exported or checkpoint), or 'rule'; the rule's rows always show")
    p.add_argument("--end2end", action="store_true",
                   help="report: also OCR the split's page images and score pairs and entities end to end")
    p.add_argument("--limit", type=int, default=0, help="report: at most this many documents")
    p.add_argument("--manifest", required=True)
    p.add_argument("--split", default="test", choices=("train", "val", "test"))
    p.add_argument("--out", help="write the metrics JSON here")
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--allow_unverified_models", action="store_true",
                   help="accept a --checkpoint folder without SHA256SUMS (only files you trust)")
    p.add_argument("--paddleocr_compat", action="store_true",
                   help="also score as PaddleOCR's eval would: first 512 tokens only, its RE chunk rule")
    p.add_argument("--kie_precision", default="auto", choices=("auto", "fp32", "bf16", "fp16"),
                   help="report: the SER/RE programs' precision, as the pipeline's flag (auto: bf16 on a bf16 CPU)")
    p.set_defaults(func=_run_evaluate)


def _run_evaluate(args: argparse.Namespace) -> int:
    from training.evaluate import evaluate_checkpoint
    from training.metrics import PRF, format_table

    exported = args.checkpoint and any((Path(args.checkpoint) / f).exists()
                                       for f in ("inference.json", "inference.pdmodel"))
    if args.ser_dir or exported:
        from training.report import evaluate_report, format_report

        report = evaluate_report(args.ser_dir or args.checkpoint, args.re_dir, args.manifest, args.split,
                                 end2end=args.end2end, limit=args.limit, kie_precision=args.kie_precision)
        print(format_report(report))
        text = json.dumps(report, indent=2, default=str)
        if args.out:
            Path(args.out).write_text(text + "\n")
        else:
            print(text)
        return 0
    if args.end2end:
        raise ValueError("--end2end needs --ser_dir")
    if not args.checkpoint:
        raise ValueError("evaluate needs --checkpoint or --ser_dir")
    else:
        metrics = evaluate_checkpoint(args.checkpoint, args.manifest, args.split, batch_size=args.batch_size,
                                      allow_unverified=args.allow_unverified_models,
                                      paddleocr_compat=args.paddleocr_compat)
    if "per_class" in metrics:
        per = {k: PRF(v["precision"], v["recall"], v["hmean"], v["support"], v["predicted"], v["correct"])
               for k, v in metrics["per_class"].items()}
        micro = PRF(metrics["precision"], metrics["recall"], metrics["hmean"], metrics["support"],
                    metrics["predicted"], metrics["correct"])
        print(format_table(micro, per))
    if "paddleocr_compat" in metrics:
        c = metrics["paddleocr_compat"]
        print(f"{'all windows':<24}hmean {metrics['hmean']:.4f} (P {metrics['precision']:.4f}, "
              f"R {metrics['recall']:.4f}, support {metrics['support']})")
        print(f"{'as PaddleOCR (512 tok)':<24}hmean {c['hmean']:.4f} (P {c['precision']:.4f}, "
              f"R {c['recall']:.4f}, support {c['support']})")
    text = json.dumps(metrics, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


def _add_shards(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("shards", help="convert annotations to label shards, build and validate manifests")
    s = p.add_subparsers(dest="shards_command", required=True)
    b = s.add_parser("build", help="build a manifest from shard files (counts documents, hashes files)")
    b.add_argument("--labels", nargs="+", action="extend",
                   help="class names (default: OTHER QUESTION ANSWER HEADER); repeatable")
    b.add_argument("--labels_file", help="class list file, one per line (class_list_xfun.txt)")
    for split in ("train", "val", "test"):
        b.add_argument(f"--{split}", nargs="+", action="extend", default=[],
                       help=f"{split} shard files (--{split} A B == --{split} A --{split} B)")
    b.add_argument("--image_dir", help="image folder for every shard")
    b.add_argument("--page_size", nargs=2, type=int, metavar=("W", "H"), help="page size for every shard")
    b.add_argument("--out", required=True, help="manifest path (.json or .yaml)")
    b.set_defaults(func=_run_build)
    v = s.add_parser("validate", help="read every shard of a manifest and report what would be skipped")
    v.add_argument("manifest")
    v.add_argument("--strict", action="store_true", help="exit 1 if anything is skipped")
    v.set_defaults(func=_run_validate)
    sources = {"xfund": "XFUND release JSON", "xfun-normalize": "PaddleOCR's legacy xfun_normalize_*.json",
               "funsd": "FUNSD annotations folder"}
    for kind, source in sources.items():
        c = s.add_parser(f"convert-{kind}", help=f"convert {source} annotations to a label shard")
        c.add_argument("source", help=source)
        c.add_argument("out", help="output label file; page sizes go to OUT.sizes.json")
        if kind == "funsd":
            c.add_argument("--xfund_labels", action="store_true",
                           help="label a question that links to no answer and no other question (a key whose field "
                                "is empty) OTHER, as XFUND does")
        c.set_defaults(func=_run_convert, kind=kind)


def manifest_summary(manifest: Any) -> str:
    """Every shard of a manifest with its split and documents, and the totals per split.

    Args:
        manifest: a ``schemas.manifest.Manifest``.

    Returns:
        A plain-text table, one row per shard (so a shard that went missing shows).
    """
    from schemas.manifest import SPLITS

    width = max([len(s.uri) for s in manifest.shards] + [5])
    rows = [f"{'split':<6} {'documents':>9}  {'shard':<{width}}"]
    rows += [f"{s.split:<6} {s.documents:>9d}  {s.uri}" for s in manifest.shards]
    totals = ", ".join(f"{split} {sum(s.documents for s in manifest.split(split))} documents in "
                       f"{len(manifest.split(split))} shards" for split in SPLITS if manifest.split(split))
    return "\n".join(rows + [f"total: {totals or 'no shards'}"])


def _run_build(args: argparse.Namespace) -> int:
    from models.features import XFUND_CLASSES
    from training.shards import build_manifest, shard_entry

    labels = args.labels or (Path(args.labels_file).read_text().split() if args.labels_file else XFUND_CLASSES)
    entries = []
    twice = sorted({f"--{split} {uri}" for split in ("train", "val", "test") for uri in getattr(args, split)
                    if getattr(args, split).count(uri) > 1})
    if twice:
        raise ValueError(f"shard files listed more than once in one split: {twice}")
    for split in ("train", "val", "test"):
        for uri in getattr(args, split):
            sizes = f"{uri}.sizes.json"
            extra: dict[str, Any] = {"sizes_uri": sizes} if Path(sizes).exists() else {}
            if args.image_dir:
                extra["image_dir"] = args.image_dir
            if args.page_size:
                extra["page_size"] = tuple(args.page_size)
            entries.append(shard_entry(uri, split, **extra))
    manifest = build_manifest(entries, labels)
    text = manifest.to_json()
    if args.out.endswith((".yaml", ".yml")):
        import yaml

        text = yaml.safe_dump(manifest.to_dict(), allow_unicode=True, sort_keys=False)
    Path(args.out).write_text(text)
    print(f"wrote {args.out}: {len(entries)} shards, {sum(e.documents for e in entries)} documents")
    print(manifest_summary(manifest))
    return 0


def _run_validate(args: argparse.Namespace) -> int:
    from schemas.manifest import SPLITS
    from training.shards import load_manifest, load_split

    manifest = load_manifest(args.manifest)
    print(manifest_summary(manifest))
    n_skips = 0
    for split in SPLITS:
        docs, skips = load_split(manifest, split)
        n_skips += len(skips)
        print(f"{split}: {len(docs)} documents read, {len(skips)} skipped items")
        for s in skips:
            print(f"  {s}")
    return 1 if args.strict and n_skips else 0


def _run_convert(args: argparse.Namespace) -> int:
    from training.shards import funsd_to_documents, write_shard, xfun_normalize_to_documents, xfund_release_to_documents

    convert = {"xfund": xfund_release_to_documents, "xfun-normalize": xfun_normalize_to_documents,
               "funsd": funsd_to_documents}[args.kind]
    docs = convert(args.source, **({"xfund_labels": args.xfund_labels} if args.kind == "funsd" else {}))
    n = write_shard(docs, args.out, sizes_uri=f"{args.out}.sizes.json")
    print(f"wrote {args.out}: {n} documents")
    return 0


def add_subcommands(subparsers: argparse._SubParsersAction) -> None:
    """Registers ``train``, ``evaluate`` and ``shards`` on a sub-parser set (each sets ``func``).

    Args:
        subparsers: the result of ``parser.add_subparsers()``.
    """
    _add_train(subparsers)
    _add_evaluate(subparsers)
    _add_shards(subparsers)


def main(argv: list[str] | None = None) -> int:
    """Standalone entry point (``python -m training.cli train ...``).

    Args:
        argv: arguments (default ``sys.argv[1:]``).

    Returns:
        The exit code.
    """
    parser = argparse.ArgumentParser(prog="kiebeam")
    add_subcommands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
