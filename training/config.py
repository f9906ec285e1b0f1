"""Training configuration: one frozen dataclass, PaddleOCR's recipes as presets, and tiny presets for CPU tests.

PaddleOCR recipes (``configs/kie/vi_layoutxlm/*.yml``): AdamW (0.9, 0.999, 1e-8) at 5e-5 without weight decay,
seed 2022, and

* SER: batch 8, 200 epochs, linear decay to 0 after 2 warmup epochs;
* RE: batch 2, 130 epochs, constant LR after 10 warmup epochs, per-parameter grad-norm clip 10
  (``paddle.nn.ClipGradByNorm``);
* UDML (``*_udml.yml``): two peer models; SER batch 4 and 10 warmup epochs; symmetric KL between SER logits
  (weight 1), 0.5 * MSE between the outputs of encoder layers 5 and 8 (0-based) on the non-padding tokens.

LayoutXLM with its visual backbone (``configs/kie/layoutlm_series/ser_layoutxlm_xfund_zh.yml`` and
``re_layoutxlm_xfund_zh.yml``, presets ``ser_layoutxlm`` / ``re_layoutxlm``; pass ``init_from`` a
``layoutxlm-base-uncased`` folder or PaddleOCR's ``ser_LayoutXLM_xfun_zh`` / ``re_LayoutXLM_xfun_zh``): the same
optimiser; SER Linear 5e-5, 200 epochs, batch 8, warmup 2; RE Const 5e-5 (the lr block has no name), 130 epochs,
batch 2, warmup 10, clip_norm 10; both evaluate every 19 iterations (``eval_batch_step: [0, 19]``), seed 2022. These
configs set no ``order_method`` (the VI ones sort tb-yx); this project's reader always sorts tb-yx. PaddleOCR
defines no UDML config for this family (``layoutlm_series/`` has none; UDML is ``vi_layoutxlm/*_udml.yml`` only).

Warmup semantics follow Paddle's ``LinearWarmup``: the LR rises linearly from 0 over the warmup steps, then the
inner schedule starts from its own step 0 (so a linear decay over ``epochs`` steps-per-epoch ends at about
``lr * warmup / epochs``), see :func:`lr_at`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from models.layoutxlm_size import LayoutXLMSize

__all__ = ["TrainConfig", "PRESETS", "get_preset", "lr_at"]

TASKS = ("ser", "re")
SCHEDULES = ("linear", "constant")
# the SER augmentation fields that are probabilities (jitter is a size)
_AUGMENT_PROBABILITIES = ("augment_merge", "augment_split", "augment_rows", "augment_drop", "augment_noise",
                          "augment_swap", "augment_empty")


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run needs; written into every checkpoint's metadata.

    Attributes:
        task: ``ser`` or ``re``.
        manifest: the shard manifest (``schemas.manifest``); ``train`` split trains, ``eval_split`` evaluates.
        out_dir: run folder (``metrics.jsonl``, plots, ``latest/``, ``best/``, ``step_N/``).
        init_from: a checkpoint folder (kiebeam, PaddleOCR ``best_accuracy/`` or PaddleNLP style); None = from
            scratch with a tokenizer trained on the training shards' text.
        tokenizer_dir: tokenizer for ``init_from`` folders that lack one.
        allow_unverified: accept an ``init_from`` or ``resume`` folder without ``SHA256SUMS`` (published
            PaddleOCR folders; ``--allow_unverified_models``).
        max_skipped_fraction: refuse to train when more than this fraction of the train or eval split's
            documents is skipped (unreadable or invalid; each is reported with its line and reason).
        vocab_size: sentencepiece pieces when training a tokenizer from scratch.
        model: backbone size when training from scratch.
        max_len: tokens per window.
        epochs / batch_size / learning_rate / warmup_epochs / schedule: optimisation (see module docstring).
        weight_decay: AdamW decoupled weight decay (PaddleOCR: 0).
        clip_norm: per-parameter gradient-norm clip (``ClipGradByNorm``), None for none.
        dropout: encoder hidden and attention dropout.
        seed: global seed.
        eval_every: evaluate every N optimizer steps (0 = once per epoch).
        save_every: save ``latest/`` (and ``step_N/``) every N steps (0 = only at the end).
        max_steps: stop after this many steps (0 = run all epochs).
        eval_split: manifest split used for model selection.
        udml: train two peer models with UDML; only the student is saved.
        udml_layers: encoder layers (0-based) whose outputs are pulled together.
        udml_dml_weight / udml_l2_weight: weights of the symmetric-KL (SER only) and MSE terms.
        resume: continue from ``out_dir/latest`` when it exists.
        log_every: write a metrics line every N steps.
        progress: print console progress lines (``training.progress``; ``kiebeam train --quiet``: off).
        re_head: ``paddleocr`` (PaddleNLP's RE head on its own backbone, ``training.train``) or ``geo`` (the
            geometric head on ``init_from``'s frozen SER encoder, ``training.re_head``).
        re_heads: geometric RE heads trained side by side and averaged (``models.layoutxlm.ReHeadModel``).
        re_detector_entities: an exported SER folder of ``init_from``'s model (its decoding settings in its
            ``metadata.json``): the geometric head also trains on the entities it decodes from each training document
            cut as a line detector reads it (``training.re_head.predicted_entity_items``); empty: gold entities only.
        bucket_by_length: batch windows of similar length (``training.data.LengthBucketSampler``) instead of
            Paddle's ``DistributedBatchSampler``; with the token axis cut per batch, an epoch costs much less.
        augment_merge / augment_split / augment_rows / augment_jitter / augment_drop / augment_noise /
            augment_swap / augment_empty: SER training augmentation (``training.augment``): same-row neighbours
            merged into one line, entities cut into two lines, boxes two rows tall cut into their rows, box jitter
            (fraction of the line height), line drops, token replacement, answer texts swapped for other training
            answers, and keys whose answers leave the page labelled OTHER; all 0 = off.
        relative_bias_lr_scale: learning-rate multiplier of the relative attention bias tables (``rel_pos*``):
            tables added to a trained model start at zero and, at the encoder's rate, barely move in a few epochs.
    """

    task: str = "ser"
    manifest: str = ""
    out_dir: str = "runs/kie"
    init_from: str | None = None
    tokenizer_dir: str | None = None
    allow_unverified: bool = False
    max_skipped_fraction: float = 0.05
    vocab_size: int = 8000
    model: LayoutXLMSize = field(default_factory=LayoutXLMSize)
    max_len: int = 512
    epochs: int = 200
    batch_size: int = 8
    learning_rate: float = 5e-5
    warmup_epochs: float = 2.0
    schedule: str = "linear"
    weight_decay: float = 0.0
    clip_norm: float | None = None
    dropout: float = 0.1
    seed: int = 2022
    eval_every: int = 19
    save_every: int = 0
    max_steps: int = 0
    eval_split: str = "val"
    udml: bool = False
    udml_layers: tuple[int, ...] = (5, 8)
    udml_dml_weight: float = 1.0
    udml_l2_weight: float = 0.5
    resume: bool = False
    log_every: int = 1
    progress: bool = True
    bucket_by_length: bool = False
    re_head: str = "paddleocr"
    re_heads: int = 1
    re_detector_entities: str = ""
    augment_merge: float = 0.0
    augment_split: float = 0.0
    augment_rows: float = 0.0
    augment_jitter: float = 0.0
    augment_drop: float = 0.0
    augment_noise: float = 0.0
    augment_swap: float = 0.0
    augment_empty: float = 0.0
    relative_bias_lr_scale: float = 1.0

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"unknown task {self.task!r}, expected one of {list(TASKS)}")
        if self.re_head not in ("paddleocr", "geo"):
            raise ValueError(f"unknown re_head {self.re_head!r}, expected 'paddleocr' or 'geo'")
        if self.re_head == "geo" and self.task != "re":
            raise ValueError("re_head='geo' is an RE setting: set task='re'")
        if self.re_heads < 1 or (self.re_heads > 1 and self.re_head != "geo"):
            raise ValueError(f"re_heads={self.re_heads}: averaged heads (> 1) are geometric RE heads (re_head='geo')")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {self.schedule!r}, expected one of {list(SCHEDULES)}")
        for name in ("epochs", "batch_size", "max_len"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 1")
        if self.learning_rate <= 0:
            raise ValueError(f"learning_rate={self.learning_rate} must be > 0")
        if self.relative_bias_lr_scale <= 0:
            raise ValueError(f"relative_bias_lr_scale={self.relative_bias_lr_scale} must be > 0")
        for name in _AUGMENT_PROBABILITIES:
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name}={getattr(self, name)} must be within [0, 1]")
        if self.augment_jitter < 0:
            raise ValueError(f"augment_jitter={self.augment_jitter} must be >= 0")
        if self.task != "ser" and any(getattr(self, n) for n in (*_AUGMENT_PROBABILITIES, "augment_jitter")):
            raise ValueError("augment_* are SER settings (training.augment): set task='ser'")
        if not 0.0 <= self.max_skipped_fraction <= 1.0:
            raise ValueError(f"max_skipped_fraction={self.max_skipped_fraction} must be within [0, 1]")
        if self.max_len > self.model.max_position_embeddings:
            raise ValueError(f"max_len={self.max_len} exceeds max_position_embeddings="
                             f"{self.model.max_position_embeddings}")
        if self.udml and any(i < 0 or i >= self.model.num_hidden_layers for i in self.udml_layers) \
                and self.init_from is None:
            raise ValueError(f"udml_layers={self.udml_layers} outside the model's "
                             f"{self.model.num_hidden_layers} layers")

    def replace(self, **changes: Any) -> TrainConfig:
        """Returns a copy with some fields changed (``model`` may be a dict of LayoutXLMSize fields)."""
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise ValueError(f"unknown TrainConfig fields {sorted(unknown)}")
        if isinstance(changes.get("model"), dict):
            changes["model"] = dataclasses.replace(self.model, **changes["model"])
        if isinstance(changes.get("udml_layers"), list):
            changes["udml_layers"] = tuple(changes["udml_layers"])
        return dataclasses.replace(self, **changes)

    def backbone_args(self, vocab_size: int) -> dict[str, Any]:
        """The ``models.layoutxlm.LayoutXLMConfig`` arguments of a from-scratch backbone.

        Args:
            vocab_size: the tokenizer's vocabulary size.

        Returns:
            ``model``'s size fields, ``vocab_size``, and ``dropout`` as hidden and attention dropout.
        """
        return {**dataclasses.asdict(self.model), "vocab_size": vocab_size, "hidden_dropout_prob": self.dropout,
                "attention_probs_dropout_prob": self.dropout}

    def to_dict(self) -> dict[str, Any]:
        """Returns the JSON-ready form (stored in checkpoint metadata)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise ValueError naming them."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown TrainConfig fields {sorted(unknown)}")
        d = dict(d)
        if isinstance(d.get("model"), dict):
            d["model"] = LayoutXLMSize(**d["model"])
        if "udml_layers" in d:
            d["udml_layers"] = tuple(d["udml_layers"])
        return cls(**d)


def lr_at(step: int, config: TrainConfig, steps_per_epoch: int) -> float:
    """The learning rate of optimizer step ``step`` (0-based), as PaddleOCR's Linear / Const with LinearWarmup.

    Args:
        step: optimizer step, 0-based.
        config: the run's config.
        steps_per_epoch: iterations per epoch.

    Returns:
        The LR for that step.

    >>> cfg = TrainConfig(epochs=10, warmup_epochs=2, learning_rate=1.0, schedule="linear")
    >>> [round(lr_at(s, cfg, 1), 2) for s in (0, 1, 2, 3, 12)]
    [0.0, 0.5, 1.0, 0.9, 0.0]
    """
    warmup = int(round(config.warmup_epochs * steps_per_epoch))
    if step < warmup:
        return config.learning_rate * step / warmup
    if config.schedule == "constant":
        return config.learning_rate
    total = config.epochs * steps_per_epoch
    return config.learning_rate * (1.0 - min(step - warmup, total) / total)


_TINY = LayoutXLMSize(hidden_size=48, num_hidden_layers=2, num_attention_heads=2, intermediate_size=96,
                      coordinate_size=8, shape_size=8)
_DEFAULT = LayoutXLMSize(hidden_size=192, num_hidden_layers=4, num_attention_heads=4, intermediate_size=768,
                         coordinate_size=32, shape_size=32)
_SMALL = LayoutXLMSize(hidden_size=96, num_hidden_layers=3, num_attention_heads=2, intermediate_size=192,
                       coordinate_size=16, shape_size=16)

PRESETS: dict[str, TrainConfig] = {
    # PaddleOCR recipes (vi-layoutxlm-base; pass init_from the pretrained folder).
    "ser_vi_layoutxlm": TrainConfig(task="ser", epochs=200, batch_size=8, warmup_epochs=2, schedule="linear"),
    "re_vi_layoutxlm": TrainConfig(task="re", epochs=130, batch_size=2, warmup_epochs=10, schedule="constant",
                                   clip_norm=10.0, eval_every=75),
    "ser_vi_layoutxlm_udml": TrainConfig(task="ser", epochs=200, batch_size=4, warmup_epochs=10, schedule="linear",
                                         udml=True, eval_every=38),
    "re_vi_layoutxlm_udml": TrainConfig(task="re", epochs=130, batch_size=2, warmup_epochs=10, schedule="constant",
                                        clip_norm=10.0, udml=True, eval_every=75),
    # PaddleOCR's LayoutXLM recipes (layoutxlm-base with its visual backbone; no UDML config exists for it).
    "ser_layoutxlm": TrainConfig(task="ser", epochs=200, batch_size=8, warmup_epochs=2, schedule="linear",
                                 eval_every=19),
    "re_layoutxlm": TrainConfig(task="re", epochs=130, batch_size=2, warmup_epochs=10, schedule="constant",
                                clip_norm=10.0, eval_every=19),
    # Tiny from-scratch models that overfit a few documents on CPU in seconds (tests, CI).
    "tiny_ser": TrainConfig(task="ser", model=_TINY, vocab_size=600, max_len=256, epochs=40, batch_size=4,
                            learning_rate=5e-3, warmup_epochs=2, schedule="linear", dropout=0.0, eval_every=0,
                            udml_layers=(0, 1), progress=False),
    "tiny_re": TrainConfig(task="re", model=_TINY, vocab_size=600, max_len=256, epochs=334, batch_size=1,
                           learning_rate=1e-3, warmup_epochs=2, schedule="constant", clip_norm=10.0, dropout=0.0,
                           eval_every=100, udml_layers=(0, 1), progress=False),
    # The bundled default model (models/assets/default_kie): small enough for CPU training in minutes. Both start
    # from training.default_model.build_smooth_init (sinusoid position tables); RE needs ~25 epochs from there.
    "small_ser": TrainConfig(task="ser", model=_SMALL, vocab_size=4000, epochs=12, batch_size=8,
                             learning_rate=2e-3, warmup_epochs=1, schedule="linear", dropout=0.1, eval_every=0,
                             udml_layers=(1, 2)),
    "small_re": TrainConfig(task="re", model=_SMALL, vocab_size=4000, epochs=25, batch_size=2,
                            learning_rate=1e-3, warmup_epochs=1, schedule="constant", clip_norm=10.0, dropout=0.1,
                            eval_every=0, udml_layers=(1, 2)),
    # The bundled default (training.default_model): from scratch on XFUND zh + de + fr + FUNSD; the geometric RE
    # head is trained on this SER model's frozen encoder (training.re_head), so one encoder serves both.
    "default_ser": TrainConfig(task="ser", model=_DEFAULT, vocab_size=8000, epochs=10, batch_size=8,
                               learning_rate=1e-3, warmup_epochs=0.5, schedule="linear", dropout=0.1, eval_every=0,
                               udml_layers=(1, 3), bucket_by_length=True, save_every=100, progress=False),
    "default_re_head": TrainConfig(task="re", re_head="geo", model=_DEFAULT, epochs=12, batch_size=4,
                                   learning_rate=1e-3, warmup_epochs=1, schedule="linear", clip_norm=10.0,
                                   dropout=0.1, progress=False),
}


def get_preset(name: str, **changes: Any) -> TrainConfig:
    """Returns a preset with some fields changed.

    Args:
        name: a key of :data:`PRESETS`.
        **changes: fields to override.

    Returns:
        The config.
    """
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}, expected one of {sorted(PRESETS)}")
    return PRESETS[name].replace(**changes)
