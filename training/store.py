"""Run-folder I/O for training: save the student as a checkpoint, load an initial checkpoint, plot metrics.

Checkpoints are written with ``models.checkpoint.save_checkpoint`` (the self-describing folder the pipeline
loads: ``model_state.pdparams``, ``config.json``, ``labels.json``, tokenizer, ``metadata.json``, ``SHA256SUMS``).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import paddle

from models.features import bio_labels

__all__ = ["save_model", "load_init", "plot_metrics", "optimizer_state", "load_optimizer_state", "resume_files",
           "seal_resume_folder", "load_resume_folder"]


def save_model(model: paddle.nn.Layer, folder: str | os.PathLike, *, task: str, tokenizer_dir: str | os.PathLike,
               labels: Sequence[str], metadata: dict[str, Any], max_len: int = 512) -> Path:
    """Saves a trained model as a checkpoint folder (replacing an older one).

    Args:
        model: a ``SerModel`` or ``ReModel``.
        folder: destination.
        task: ``ser`` or ``re``.
        tokenizer_dir: the tokenizer folder to copy in.
        labels: the class list (``Manifest.labels``).
        metadata: run facts: ``manifest`` (stored as the training data), ``metrics``, anything else (extra).
        max_len: window length.

    Returns:
        The folder.
    """
    from models import checkpoint

    folder = Path(folder)
    if folder.exists():
        shutil.rmtree(folder)
    meta = dict(metadata)
    checkpoint.save_checkpoint(model, folder, tokenizer_dir=tokenizer_dir,
                               labels=bio_labels(labels) if task == "ser" else None,
                               training_data=meta.pop("manifest", None), metrics=meta.pop("metrics", None),
                               extra=meta, max_len=max_len)
    return folder


def load_init(folder: str, tokenizer_dir: str | None, *, task: str,
              allow_unverified: bool = False) -> tuple[Any, Path, Any, dict]:
    """Opens an initial checkpoint (kiebeam, PaddleOCR ``best_accuracy/`` or PaddleNLP style).

    Args:
        folder: the checkpoint folder.
        tokenizer_dir: tokenizer folder for checkpoints without one.
        task: ``ser`` or ``re`` (a SER backbone may initialise RE: only matching keys are used).
        allow_unverified: accept a folder without ``SHA256SUMS`` (published PaddleOCR folders have none).

    Returns:
        ``(tokenizer, tokenizer_dir, LayoutXLMConfig, state_dict)``.
    """
    from models import checkpoint
    from models.tokenizer import load_tokenizer

    ckpt = checkpoint.load_checkpoint(folder, tokenizer_dir=tokenizer_dir, allow_unverified=allow_unverified)
    return load_tokenizer(ckpt.tokenizer_dir), Path(ckpt.tokenizer_dir), ckpt.config, ckpt.model.state_dict()


def resume_files(num_models: int) -> list[str]:
    """The files of a ``latest/`` resume folder for ``num_models`` models (1, or 2 with UDML)."""
    return [f"model_{i}.pdparams" for i in range(num_models)] + ["optimizer.pdopt", "rng.pkl", "state.json"]


def seal_resume_folder(folder: str | os.PathLike, num_models: int) -> Path:
    """Writes ``SHA256SUMS`` over a freshly written resume folder, so ``--resume`` can verify it like any model.

    Args:
        folder: the ``latest/`` folder, every file of :func:`resume_files` written.
        num_models: how many ``model_<i>.pdparams`` it holds.

    Returns:
        The sums file.
    """
    from models.integrity import write_sha256sums

    return write_sha256sums(folder, resume_files(num_models))


def load_resume_folder(folder: str | os.PathLike, num_models: int, *,
                       allow_unverified: bool = False) -> tuple[dict[str, Any], list[dict], dict[str, Any], list]:
    """Verifies and loads a ``latest/`` resume folder: run state, model states, optimizer state, RNG state.

    The folder is checked against its ``SHA256SUMS`` first, as every model folder, and every pickle is read
    through ``models.safe_load`` (never ``paddle.load``/``pickle.load``), so a hostile folder cannot run code.

    Args:
        folder: the ``latest/`` folder.
        num_models: how many models the run trains (1, or 2 with UDML).
        allow_unverified: accept a folder without ``SHA256SUMS`` (written before kiebeam sealed resume folders).

    Returns:
        ``(state.json contents, [model state dicts], optimizer state (tensors), RNG states)``.

    Raises:
        models.integrity.ModelIntegrityError: a missing file or ``SHA256SUMS``, or a checksum mismatch.
        models.safe_load.UnsafeModelFileError: a pickle naming a refused global, or not a state pickle.
    """
    from models.integrity import verify_model_dir
    from models.safe_load import load_rng_state, load_state

    folder = Path(folder)
    verify_model_dir(folder, resume_files(num_models), allow_unverified=allow_unverified)
    run_state = json.loads((folder / "state.json").read_text())
    models = [load_state(folder / f"model_{i}.pdparams") for i in range(num_models)]
    return run_state, models, load_state(folder / "optimizer.pdopt", tensors=True), load_rng_state(folder / "rng.pkl")


def plot_metrics(metrics_path: str | os.PathLike, out_dir: str | os.PathLike) -> list[Path]:
    """Draws ``loss.png`` and ``hmean.png`` from a ``metrics.jsonl`` (matplotlib, Agg backend).

    Args:
        metrics_path: the metrics file.
        out_dir: where to write the PNGs.

    Returns:
        The written files.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(x) for x in Path(metrics_path).read_text().splitlines() if x.strip()]
    written = []
    for name, key, pick in (("loss.png", "loss", lambda r: r.get("loss")),
                            ("hmean.png", "hmean", lambda r: r.get("eval", {}).get("hmean"))):
        pts = [(r["step"], pick(r)) for r in rows if pick(r) is not None]
        if not pts:
            continue
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="." if key == "hmean" else None)
        ax.set_xlabel("step")
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        path = Path(out_dir) / name
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)
    return written


def _param_names(models: Sequence[paddle.nn.Layer]) -> dict[str, str]:
    """Paddle's generated parameter name -> a stable ``"<model index>/<structured name>"``."""
    return {p.name: f"{i}/{n}" for i, m in enumerate(models) for n, p in m.named_parameters()}


def optimizer_state(optimizer: paddle.optimizer.Optimizer, models: Sequence[paddle.nn.Layer]) -> dict[str, Any]:
    """The optimizer state with keys made stable across processes (Paddle keys it by generated names).

    Args:
        optimizer: the optimizer.
        models: the models whose parameters it updates, in a fixed order.

    Returns:
        A state dict for :func:`load_optimizer_state`.
    """
    names = sorted(_param_names(models).items(), key=lambda kv: -len(kv[0]))
    out: dict[str, Any] = {}
    for key, value in optimizer.state_dict().items():
        for generated, stable in names:
            if key.startswith(generated + "_"):
                key = stable + "::" + key[len(generated):]
                break
        out[key] = value
    return out


def load_optimizer_state(optimizer: paddle.optimizer.Optimizer, models: Sequence[paddle.nn.Layer],
                         state: dict[str, Any]) -> None:
    """Restores a state saved by :func:`optimizer_state` into an optimizer over freshly built models.

    Args:
        optimizer: the optimizer.
        models: the same models, in the same order.
        state: the saved state.
    """
    back = {stable: generated for generated, stable in _param_names(models).items()}
    restored = {}
    for key, value in state.items():
        if "::" in key:
            stable, rest = key.split("::", 1)
            if stable not in back:
                raise ValueError(f"optimizer state names parameter {stable!r}, which the model does not have")
            key = back[stable] + rest
        restored[key] = value
    optimizer.set_state_dict(restored)
