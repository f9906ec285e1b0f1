"""Train, evaluate and export the bundled default SER + RE models (``models/assets/default_kie/{ser,re}``).

    .venv/bin/python -m training.default_model --data ../shared/data/xfund_zh_train --work /tmp/kie_default \
        --out models/assets/default_kie

From scratch on XFUND zh train documents 30..148 (the label file's lines 31..149), with documents 0..29 held out
as the validation split (their images exist, so the demo's example pages are unseen by the model). The best
checkpoint by validation Hmean is kept (PaddleOCR's rule), so the reported Hmean is best-on-validation. The RE
model starts from the SER model's backbone and tokenizer (PaddleOCR's RE also starts from a pretrained backbone).
Shard files and run folders go to ``--work`` (never into the repository); the exported folders carry the exact
command and the measured Hmean in ``metadata.json``.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any

from models.integrity import write_sha256sums
from training.config import get_preset
from training.evaluate import evaluate_checkpoint
from training.shards import build_manifest, shard_entry
from training.train import main as train_main

__all__ = ["build_default_manifest", "main"]

PAGE_SIZE = (2480, 3508)  # XFUND pages without an image here are assumed portrait A4 at 300 dpi


def build_default_manifest(data_dir: Path, work: Path, *, val_docs: int = 30) -> Path:
    """Splits ``train.json`` into a train shard (documents ``val_docs..``) and a val shard (``0..val_docs-1``).

    Args:
        data_dir: the ``xfund_zh_train`` folder (``train.json``, ``image/``, ``class_list_xfun.txt``).
        work: where the shards and the manifest are written.
        val_docs: how many leading documents form the validation split.

    Returns:
        The manifest path.
    """
    data_dir, work = data_dir.resolve(), work.resolve()  # the manifest stores absolute URIs
    work.mkdir(parents=True, exist_ok=True)
    lines = [x for x in (data_dir / "train.json").read_text(encoding="utf-8").splitlines() if x.strip()]
    (work / "val.txt").write_text("\n".join(lines[:val_docs]) + "\n", encoding="utf-8")
    (work / "train.txt").write_text("\n".join(lines[val_docs:]) + "\n", encoding="utf-8")
    labels = (data_dir / "class_list_xfun.txt").read_text().split()
    extra: dict[str, Any] = {"image_dir": str(data_dir / "image"), "page_size": PAGE_SIZE}
    manifest = build_manifest([shard_entry(str(work / "train.txt"), "train", **extra),
                               shard_entry(str(work / "val.txt"), "val", **extra)], labels)
    (work / "manifest.json").write_text(manifest.to_json())
    return work / "manifest.json"


def _export(best: Path, out: Path, command: str, metrics: dict[str, Any], seconds: float) -> None:
    from models.checkpoint import export_inference

    export_inference(best, out)
    meta_path = out / "metadata.json"
    meta = json.loads(meta_path.read_text())
    meta.update(command=command, validation_metrics=metrics, train_seconds=round(seconds, 1),
                validation_split="xfund_zh_train documents 0..29 (train: 30..148)")
    meta_path.write_text(json.dumps(meta, indent=2, default=str))
    write_sha256sums(out)


def main(argv: list[str] | None = None) -> int:
    """Builds the split, trains SER then RE, evaluates both on the held-out documents, and exports them.

    Args:
        argv: command-line arguments (see the module docstring).

    Returns:
        The exit code.
    """
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default="../shared/data/xfund_zh_train")
    p.add_argument("--work", default="/tmp/kie_default")
    p.add_argument("--out", default="models/assets/default_kie")
    p.add_argument("--ser_epochs", type=int)
    p.add_argument("--re_epochs", type=int)
    args = p.parse_args(argv)
    command = "python -m training.default_model " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    work, out = Path(args.work), Path(args.out)
    manifest = str(build_default_manifest(Path(args.data), work))

    t0 = time.perf_counter()
    ser_cfg = get_preset("small_ser", manifest=manifest, out_dir=str(work / "ser"))
    if args.ser_epochs:
        ser_cfg = ser_cfg.replace(epochs=args.ser_epochs)
    train_main(ser_cfg)
    t_ser = time.perf_counter() - t0
    ser_metrics = evaluate_checkpoint(str(work / "ser" / "best"), manifest, "val")

    t0 = time.perf_counter()
    re_cfg = get_preset("small_re", manifest=manifest, out_dir=str(work / "re"), init_from=str(work / "ser" / "best"))
    if args.re_epochs:
        re_cfg = re_cfg.replace(epochs=args.re_epochs)
    train_main(re_cfg)
    t_re = time.perf_counter() - t0
    re_metrics = evaluate_checkpoint(str(work / "re" / "best"), manifest, "val")

    _export(work / "ser" / "best", out / "ser", command, ser_metrics, t_ser)
    _export(work / "re" / "best", out / "re", command, re_metrics, t_re)
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    print(json.dumps({"ser_hmean": ser_metrics["hmean"], "re_hmean": re_metrics["hmean"], "ser_seconds": t_ser,
                      "re_seconds": t_re, "export_bytes": size}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
