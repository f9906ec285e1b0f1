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

__all__ = ["save_model", "round_as_packed", "load_init", "plot_metrics", "optimizer_state", "load_optimizer_state",
           "resume_files", "seal_resume_folder", "load_resume_folder", "checkpoint_from_export"]


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


def checkpoint_from_export(export_dir: str | os.PathLike, out_dir: str | os.PathLike, *, labels: Sequence[str],
                           atol: float = 1e-4) -> Path:
    """Turns an exported kiebeam SER folder (``inference.json`` + ``inference.pdiparams``) back into a training
    checkpoint, so a bundled model can be trained further (``init_from``) without its original run folder.

    ``paddle.jit.save`` keeps each parameter under the name Paddle gave it when the layer was built
    (``linear_3.w_0``, ...): the program lists the names, and ``inference.pdiparams`` holds the tensors in sorted
    name order. Names count up per layer kind in creation order (from wherever the exporting process's counters
    stood), so a ``SerModel`` of the folder's ``config.json`` built the same way has, kind by kind, the same
    parameters in the same order. Shapes are checked, and the rebuilt model must reproduce the exported model's
    logits on a sample input (``atol``), else nothing is written.

    Args:
        export_dir: the exported SER folder (verified against its ``SHA256SUMS``).
        out_dir: the checkpoint folder to write.
        labels: the class list (``Manifest.labels``) the model was trained with.
        atol: largest allowed logit difference between the rebuilt and the exported model.

    Returns:
        ``out_dir``.
    """
    import numpy as np

    from models.integrity import verify_model_dir
    from models.layoutxlm import LayoutXLMConfig, SerModel

    export_dir = Path(export_dir)
    verify_model_dir(export_dir)
    program = json.loads((export_dir / "inference.json").read_text())
    ops = program["program"]["regions"][0]["blocks"][0]["ops"]
    names = sorted(op["A"][3] for op in ops if op.get("#") == "p")  # the order of the stored tensors
    cfg_dict = json.loads((export_dir / "config.json").read_text())
    cfg = LayoutXLMConfig(**{k: v for k, v in cfg_dict.items() if k in LayoutXLMConfig.__dataclass_fields__})
    with paddle.utils.unique_name.guard():
        model = SerModel(cfg, len(bio_labels(labels)))
    stored = paddle.jit.load(str(export_dir / "inference"))
    values = dict(zip(names, stored.state_dict().values()))
    targets = {p.name: p for p in model.parameters()} | {b.name: b for b in model.buffers()}
    mapping = _match_generated_names(values, targets)
    if mapping is None:
        raise ValueError(f"{export_dir}: its {len(names)} stored tensors do not match the parameters of a SerModel "
                         "built from its config.json")
    for name, target in mapping.items():
        value = values[name]
        if list(targets[target].shape) != list(value.shape):
            raise ValueError(f"{export_dir}: {name} has shape {list(value.shape)}, the model's {target} wants "
                             f"{list(targets[target].shape)}")
        targets[target].set_value(value.numpy())
    model.eval()
    rng = np.random.default_rng(0)
    t = 64
    x0 = np.sort(rng.integers(0, 900, (1, t, 2)), axis=-1)
    y0 = np.sort(rng.integers(0, 900, (1, t, 2)), axis=-1)
    bbox = np.stack([x0[..., 0], y0[..., 0], x0[..., 1] + 50, y0[..., 1] + 20], -1).astype(np.int64)
    sample = [paddle.to_tensor(rng.integers(3, cfg.vocab_size, (1, t)).astype(np.int64)), paddle.to_tensor(bbox),
              paddle.to_tensor(np.ones((1, t), np.int64)), paddle.to_tensor(np.zeros((1, t), np.int64))]
    want = stored(*sample)
    want = (want[0] if isinstance(want, (list, tuple)) else want).numpy()
    got = model(*sample)
    got = (got.logits if hasattr(got, "logits") else got[0]).numpy()
    diff = float(np.abs(got - want).max())
    if diff > atol:
        raise ValueError(f"{export_dir}: the rebuilt model differs from the exported one by {diff:.2e} > {atol}")
    return save_model(model, out_dir, task="ser", tokenizer_dir=export_dir, labels=labels,
                      metadata={"init": f"weights of the exported folder {export_dir} (max logit diff {diff:.1e})"},
                      max_len=int(json.loads((export_dir / "metadata.json").read_text()).get("max_len", 512)))


def _match_generated_names(stored: Any, model: Any) -> dict[str, str] | None:
    """Maps Paddle's generated names of exported tensors (``linear_12.w_0``) to a fresh model's, or None.

    Names count up per layer kind in creation order, from wherever the exporting process's counters stood; the
    export drops tensors the program does not use (e.g. a pooler). Per kind, the first index is used in both, so
    the offset between the two numberings is the difference of the smallest indices.
    """
    import re

    def split(name: str) -> tuple[str, int, str]:
        m = re.fullmatch(r"(.*?)_(\d+)(\.\w+)?", name)
        return (m.group(1), int(m.group(2)), m.group(3) or "") if m else (name, -1, "")

    first: dict[str, int] = {}
    for name in model:
        kind, index, _ = split(name)
        first[kind] = min(first.get(kind, index), index)
    offsets: dict[str, int] = {}
    for name in stored:
        kind, index, _ = split(name)
        offsets[kind] = min(offsets.get(kind, index), index)
    mapping = {}
    for name in stored:
        kind, index, suffix = split(name)
        if kind not in first:
            return None
        target = name if index < 0 else f"{kind}_{index - offsets[kind] + first[kind]}{suffix}"
        if target not in model:
            return None
        mapping[name] = target
    return mapping


def with_relative_attention_bias(src: str | os.PathLike, out_dir: str | os.PathLike, *,
                                 labels: Sequence[str]) -> Path:
    """A copy of SER checkpoint ``src`` with LayoutLMv2's relative attention biases switched on.

    The 1-D (token positions) and 2-D (box ``x0`` / ``y1``) bias tables (``models.layoutxlm.LayoutXLMEncoder``)
    start at zero, so the copy computes exactly what ``src`` does until training moves them; tables ``src`` already
    has are kept.

    Args:
        src: a kiebeam SER checkpoint folder.
        out_dir: the checkpoint folder to write.
        labels: the class list (``Manifest.labels``) the model was trained with.

    Returns:
        ``out_dir``.
    """
    import dataclasses

    from models import checkpoint
    from models.layoutxlm import SerModel

    ckpt = checkpoint.load_checkpoint(src, task="ser")
    cfg = dataclasses.replace(ckpt.config, has_relative_attention_bias=True, has_spatial_attention_bias=True)
    model = SerModel(cfg, ckpt.model.num_labels)
    tables = {k: paddle.zeros_like(v) for k, v in model.state_dict().items() if ".rel_pos" in k}
    model.set_state_dict({**tables, **ckpt.model.state_dict()})
    return save_model(model, out_dir, task="ser", tokenizer_dir=ckpt.tokenizer_dir, labels=labels,
                      metadata={"init": f"{src} with zero relative attention bias tables"},
                      max_len=int(ckpt.metadata.get("max_len", 512)))


def round_as_packed(folder: str | os.PathLike) -> bool:
    """Rounds a SER checkpoint's weights in place to what its exported folder will hold once packed
    (``models.packed_params.rounded``), so an RE head trained next reads the encoder states users get.

    Returns:
        True if it rounded; False if the checkpoint's metadata says it already was (``rounded_as_packed``).
    """
    from models import checkpoint
    from models.packed_params import rounded

    ckpt = checkpoint.load_checkpoint(folder, task="ser")
    if ckpt.metadata.get("rounded_as_packed"):
        return False
    state = {k: paddle.to_tensor(rounded(v.numpy())) for k, v in ckpt.model.state_dict().items()}
    ckpt.model.set_state_dict(state)
    meta = {k: v for k, v in ckpt.metadata.items() if k not in ("format", "version", "task", "max_len", "family")}
    checkpoint.save_checkpoint(ckpt.model, folder, tokenizer_dir=ckpt.tokenizer_dir, labels=ckpt.labels,
                               training_data=meta.pop("training_data", None), metrics=meta.pop("metrics", None),
                               extra={**meta, "rounded_as_packed": True},
                               max_len=int(ckpt.metadata.get("max_len", 512)))
    return True
