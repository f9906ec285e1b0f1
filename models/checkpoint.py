"""KIE checkpoints: our self-describing folder, PaddleOCR / PaddleNLP trained folders, and inference export.

Our checkpoint folder (:func:`save_checkpoint`)::

    model_state.pdparams     state dict (PaddleNLP key names, see models.layoutxlm)
    config.json              LayoutXLMConfig.to_dict()
    labels.json              {"task": "ser"|"re", "labels": [...]}: BIO labels for SER, RE entity labels for RE
    sentencepiece.bpe.model  the tokenizer (models.tokenizer)
    metadata.json            {"format": "kiebeam-kie-checkpoint", "version": 1, "task", "max_len",
                              "training_data": manifest (or null), "metrics": {...}, ...}
    SHA256SUMS               checked before anything is loaded (models.integrity)

Also loaded by :func:`load_checkpoint`:

* PaddleOCR trained folders (``best_accuracy/``, ``latest/``): ``model_state.pdparams`` + ``model_config.json``
  in PaddleNLP's v1 format (``init_args`` holding the base-model config, plus ``init_class``/``num_classes``);
* PaddleNLP folders: ``model_state.pdparams`` + ``config.json`` (flat config).

Both families load from either layout: VI-LayoutXLM, and LayoutXLM with its visual backbone (PaddleOCR's
``ser_LayoutXLM_xfun_zh`` / ``re_LayoutXLM_xfun_zh``). PaddleOCR's ``model_config.json`` was written by PaddleNLP
<= 2.5 from ``layoutxlm-base-uncased``'s init configuration, which has no ``use_visual_backbone`` key; there the
weights decide (``layoutxlm.visual.backbone.*`` keys present = the visual family). A config that says
``use_visual_backbone=False`` over weights that hold a backbone is refused rather than run without its image.

Neither carries a tokenizer or our labels: pass ``tokenizer_dir`` (a folder with ``sentencepiece.bpe.model``)
where the folder has none; SER labels default to XFUND's when the classifier has 7 outputs. These folders have no
``SHA256SUMS`` as published: write one after checking where the files came from, or pass ``allow_unverified``.

Exported folders (:func:`export_inference`): ``inference.json`` + ``inference.pdiparams`` (``paddle.jit.save``
on Paddle 3), the same ``config.json``, ``labels.json``, ``sentencepiece.bpe.model``, ``metadata.json``, and
``SHA256SUMS``. SER program: inputs ``input_ids, bbox, attention_mask, token_type_ids`` ``(N, max_len[, 4])``
int64, output logits ``(N, max_len, C)``. RE program: the same plus ``entities (N, E, 3)`` and ``pairs (N, P, 2)``
(-1 padding), output pair logits ``(N, P, 2)``. A model of the ``layoutxlm`` family takes ``image (N, 3, 224, 224)``
float32 after ``token_type_ids`` (``models.page_image``); its ``metadata.json`` says ``"family": "layoutxlm"``,
``"needs_image": true`` and the ``image`` preprocessing, which is how the pipeline knows to carry page images.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from models.features import PAIR_FEATURES, RE_ENTITY_LABELS, XFUND_CLASSES, bio_labels
from models.integrity import verify_model_dir, write_sha256sums
from models.layoutxlm import LayoutXLMConfig, ReHeadModel, ReModel, SerModel
from models.model_files import CONFIG_FILE, LABELS_FILE, METADATA_FILE, STATE_FILE
from models.page_image import KIE_IMAGE_SIZE, image_spec
from models.safe_load import UnsafeModelFileError, load_state
from models.tokenizer import TOKENIZER_FILE

__all__ = ["CheckpointError", "Checkpoint", "save_checkpoint", "load_checkpoint", "export_inference",
           "encoder_fingerprint",
           "STATE_FILE", "CONFIG_FILE", "LABELS_FILE", "METADATA_FILE", "TASKS"]

PADDLEOCR_CONFIG_FILE = "model_config.json"
FORMAT_NAME = "kiebeam-kie-checkpoint"
EXPORT_FORMAT_NAME = "kiebeam-kie-inference"
TASKS = ("ser", "re")
# Keys that a VI (text-only) model accepts and ignores: PaddleNLP's vi-layoutxlm-base-uncased weights still hold
# the pixel statistics and visual_proj of LayoutXLM (reported "not used" when PaddleNLP loads them).
_IGNORED_PREFIXES = ("layoutxlm.visual.pixel_", "layoutxlm.visual_proj.")
_BACKBONE_PREFIX = "layoutxlm.visual.backbone."
# Buffers that may be absent from a checkpoint; the model's own value is kept.
_OPTIONAL_KEYS = ("layoutxlm.embeddings.position_ids",)


class CheckpointError(ValueError):
    """A checkpoint folder cannot be loaded; the message names the file and what is wrong."""


@dataclass
class Checkpoint:
    """A loaded KIE model with everything needed to use it.

    Attributes:
        model: the SerModel or ReModel (in eval mode).
        task: ``"ser"`` or ``"re"``.
        config: the backbone config.
        labels: SER BIO labels (index = label id) or the RE entity labels (HEADER, QUESTION, ANSWER).
        tokenizer_dir: folder holding ``sentencepiece.bpe.model``.
        metadata: ``metadata.json`` content (empty for foreign formats).
        folder: where it was loaded from.
    """

    model: Any
    task: str
    config: LayoutXLMConfig
    labels: list[str]
    tokenizer_dir: Path
    metadata: dict[str, Any] = field(default_factory=dict)
    folder: Path | None = None


def _task_of(model: Any) -> str:
    if isinstance(model, SerModel):
        return "ser"
    if isinstance(model, ReModel | ReHeadModel):
        return "re"
    raise ValueError(f"expected a SerModel, ReModel or ReHeadModel, got {type(model).__name__}")


def encoder_fingerprint(state: dict[str, Any]) -> str:
    """A sha256 over the encoder weights that shape its hidden states (``layoutxlm.*`` keys, sorted).

    A geometric RE head (``models.layoutxlm.ReHeadModel``) reads the hidden states of the SER encoder it was
    trained on; the SER export and the head both record this fingerprint, and ``models.kie.KiePredictor``
    refuses a head whose encoder is not the SER folder's. The pooler never reaches the hidden states, nor do
    ``visual_segment_embedding`` and ``visual_LayerNorm`` without a visual backbone (VI-LayoutXLM): an export
    drops them, so they are left out, and a SER folder turned back into a checkpoint
    (``training.store.checkpoint_from_export``) keeps its export's fingerprint.
    """
    import hashlib

    visual = any(k.startswith("layoutxlm.visual.") for k in state)
    unused = ("layoutxlm.pooler.",) + (() if visual else ("layoutxlm.visual_segment_embedding",
                                                          "layoutxlm.visual_LayerNorm."))
    h = hashlib.sha256()
    for k in sorted(k for k in state if k.startswith("layoutxlm.") and not k.startswith(unused)):
        v = state[k]
        arr = np.ascontiguousarray(v.numpy() if hasattr(v, "numpy") else np.asarray(v), dtype=np.float32)
        h.update(k.encode())
        h.update(arr.tobytes())
    return h.hexdigest()


def _labels_for(task: str, labels: list[str] | None, model: Any) -> list[str]:
    if task == "re":
        want = sorted(RE_ENTITY_LABELS, key=RE_ENTITY_LABELS.get)
        if labels is not None and list(labels) != want:
            raise ValueError(f"RE entity labels are fixed to {want} (PaddleOCR), got {labels}")
        return want
    if labels is None:
        labels = bio_labels(XFUND_CLASSES)
    if len(labels) != model.num_labels:
        raise ValueError(f"{len(labels)} labels {labels} for a classifier with {model.num_labels} outputs")
    return list(labels)


def _prepare_output(model: Any, labels: list[str] | None, tokenizer_dir: str | Path,  # noqa: ANN401
                    out_dir: str | Path) -> tuple[str, list[str], Path, Path]:
    """Checks what a saved or exported folder needs; returns ``(task, labels, tokenizer file, created out dir)``."""
    task = _task_of(model)
    labels = _labels_for(task, labels, model)
    tok = Path(tokenizer_dir) / TOKENIZER_FILE
    if not tok.is_file():
        raise CheckpointError(f"tokenizer file {tok} is missing")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return task, labels, tok, out


def save_checkpoint(model: Any, out_dir: str | os.PathLike, *, tokenizer_dir: str | os.PathLike,
                    labels: list[str] | None = None, training_data: Any = None,
                    metrics: dict[str, Any] | None = None, extra: dict[str, Any] | None = None,
                    max_len: int = 512) -> Path:
    """Writes our checkpoint folder (weights, config, labels, tokenizer, metadata, SHA256SUMS).

    Args:
        model: a SerModel or ReModel.
        out_dir: the folder (created; existing files of the same names are replaced).
        tokenizer_dir: folder with the tokenizer's ``sentencepiece.bpe.model``.
        labels: SER BIO labels (default XFUND's); must be None or the fixed entity labels for RE.
        training_data: JSON-ready description of the training data (e.g. the shard manifest).
        metrics: JSON-ready metrics (e.g. ``{"hmean": 0.93}``).
        extra: other JSON-ready metadata (e.g. the training config).
        max_len: window length the model was trained with.

    Returns:
        The folder.

    Raises:
        ValueError: a model of another type, labels that do not fit, or a missing tokenizer file.
    """
    import paddle

    task, labels, tok, out = _prepare_output(model, labels, tokenizer_dir, out_dir)
    paddle.save(model.state_dict(), str(out / STATE_FILE))
    (out / CONFIG_FILE).write_text(json.dumps(model.config.to_dict(), indent=2))
    (out / LABELS_FILE).write_text(json.dumps({"task": task, "labels": labels}, indent=2))
    if tok.resolve() != (out / TOKENIZER_FILE).resolve():
        shutil.copyfile(tok, out / TOKENIZER_FILE)
    meta = {"format": FORMAT_NAME, "version": 1, "task": task, "max_len": max_len, "family": model.config.family,
            "training_data": training_data, "metrics": metrics or {}, **(extra or {})}
    (out / METADATA_FILE).write_text(json.dumps(meta, indent=2, default=str))
    write_sha256sums(out, [STATE_FILE, CONFIG_FILE, LABELS_FILE, TOKENIZER_FILE, METADATA_FILE])
    return out


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"cannot read {path}: {e}") from e
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} must hold a JSON object, got {type(data).__name__}")
    return data


def _find_base_config(d: Any) -> dict[str, Any] | None:
    """The dict holding ``hidden_size`` inside a PaddleNLP v1 ``init_args`` tree."""
    if isinstance(d, dict):
        if "hidden_size" in d:
            return d
        children = list(d.values())
    elif isinstance(d, list | tuple):
        children = list(d)
    else:
        return None
    for c in children:
        found = _find_base_config(c)
        if found is not None:
            return found
    return None


def _check_state(model: Any, state: dict[str, Any], path: Path) -> dict[str, Any]:
    """Returns the state to load; raises naming the file on missing/unexpected keys and wrong shapes."""
    own = model.state_dict()
    if not model.config.use_visual_backbone:
        state = {k: v for k, v in state.items() if not k.startswith(_IGNORED_PREFIXES)}
    missing = sorted(k for k in own if k not in state and k not in _OPTIONAL_KEYS)
    unexpected = sorted(k for k in state if k not in own)
    if missing:
        raise CheckpointError(f"{path} is missing {len(missing)} keys: {missing[:8]}"
                              f"{' ...' if len(missing) > 8 else ''}")
    if unexpected:
        raise CheckpointError(f"{path} has {len(unexpected)} unexpected keys: {unexpected[:8]}"
                              f"{' ...' if len(unexpected) > 8 else ''}")
    for k, v in state.items():
        want, got = list(own[k].shape), list(np.shape(v))
        if want != got:
            raise CheckpointError(f"{path}: key {k} has shape {got}, the model expects {want}")
    return state


def _visual_sizes(state: dict[str, Any]) -> dict[str, Any]:
    """The ResNeXt-FPN sizes read off the weights (PaddleNLP's configs do not carry them: its yaml does)."""
    def shape(name: str) -> list[int]:
        return list(np.shape(state[_BACKBONE_PREFIX + name]))

    try:
        bottleneck, per_group = shape("bottom_up.res2.0.conv2.weight")[:2]
        res4_blocks = 1 + max(int(k[len(_BACKBONE_PREFIX + "bottom_up.res4."):].split(".")[0])
                              for k in state if k.startswith(_BACKBONE_PREFIX + "bottom_up.res4."))
        sizes = {"visual_stem_channels": shape("bottom_up.stem.conv1.weight")[0],
                 "visual_res2_channels": shape("bottom_up.res2.0.conv3.weight")[0],
                 "visual_num_groups": bottleneck // per_group, "visual_width_per_group": per_group,
                 "visual_depth": {6: 50, 23: 101, 36: 152}.get(res4_blocks, -res4_blocks)}
        channels = shape("fpn_lateral2.weight")[0]
    except (KeyError, ValueError, IndexError, ZeroDivisionError) as e:
        raise CheckpointError(f"the visual backbone weights are incomplete ({e})") from e
    return {**sizes, "channels": channels}


def _with_family(base: dict[str, Any], state: dict[str, Any], path: Path) -> dict[str, Any]:
    """The config with ``use_visual_backbone`` (and the backbone's sizes) from the weights where it does not say."""
    backbone = sum(1 for k in state if k.startswith(_BACKBONE_PREFIX))
    if not base.get("use_visual_backbone", backbone > 0):
        if backbone:
            raise CheckpointError(f"{path} says use_visual_backbone=False, but the weights hold {backbone} visual "
                                  f"backbone tensors ({_BACKBONE_PREFIX}*): a LayoutXLM model with its visual "
                                  f"backbone cannot run without the page image; fix the config")
        return {**base, "use_visual_backbone": False}
    if not backbone:
        return {**base, "use_visual_backbone": True}  # the state check names the missing keys
    sizes = _visual_sizes(state)
    pool = list(base.get("image_feature_pool_shape", [7, 7]))[:2] + [sizes.pop("channels")]
    return {**sizes, **base, "use_visual_backbone": True, "image_feature_pool_shape": pool}


def load_checkpoint(folder: str | os.PathLike, *, allow_unverified: bool = False,
                    tokenizer_dir: str | os.PathLike | None = None, task: str | None = None) -> Checkpoint:
    """Loads our checkpoint folder, a PaddleOCR ``best_accuracy`` folder or a PaddleNLP folder.

    The folder is verified against its ``SHA256SUMS`` first (``.pdparams`` files are pickles).

    Args:
        folder: the checkpoint folder.
        allow_unverified: accept a folder without ``SHA256SUMS`` (an explicit user choice).
        tokenizer_dir: where ``sentencepiece.bpe.model`` is when the folder has none.
        task: ``"ser"`` or ``"re"`` to insist on one; by default it is read or inferred from the keys.

    Returns:
        The :class:`Checkpoint`, model in eval mode.

    Raises:
        CheckpointError: a missing file or tokenizer, bad JSON, missing/unexpected keys, wrong shapes.
        models.integrity.ModelIntegrityError: a missing ``SHA256SUMS`` or a checksum mismatch.
    """
    root = Path(folder)
    if not root.is_dir():
        raise CheckpointError(f"checkpoint folder {root} does not exist or is not a folder")
    if (root / METADATA_FILE).is_file():
        config_name = CONFIG_FILE
    elif (root / PADDLEOCR_CONFIG_FILE).is_file():
        config_name = PADDLEOCR_CONFIG_FILE
    elif (root / CONFIG_FILE).is_file():
        config_name = CONFIG_FILE
    else:
        raise CheckpointError(f"checkpoint folder {root} has no {CONFIG_FILE} or {PADDLEOCR_CONFIG_FILE}")
    ours = (root / METADATA_FILE).is_file()
    required = [STATE_FILE, config_name] + ([LABELS_FILE, METADATA_FILE] if ours else [])
    for name in required:
        if not (root / name).is_file():
            raise CheckpointError(f"checkpoint file {root / name} is missing")
    tok_dir = root if (root / TOKENIZER_FILE).is_file() else (Path(tokenizer_dir) if tokenizer_dir else None)
    if tok_dir is None or not (tok_dir / TOKENIZER_FILE).is_file():
        raise CheckpointError(f"tokenizer file {TOKENIZER_FILE} is missing from {root}"
                              + (f" and from {tok_dir}" if tok_dir else "; pass tokenizer_dir"))
    if tok_dir == root:
        required.append(TOKENIZER_FILE)
    verify_model_dir(root, required, allow_unverified=allow_unverified)

    raw_cfg = _read_json(root / config_name)
    meta = _read_json(root / METADATA_FILE) if ours else {}
    base = raw_cfg if ours else _find_base_config(raw_cfg)
    if base is None:
        raise CheckpointError(f"{root / config_name} holds no LayoutXLM config (no hidden_size)")
    try:  # never paddle.load: a pickle may name any callable (models.safe_load)
        state = load_state(root / STATE_FILE)
    except UnsafeModelFileError as e:  # a hostile, truncated or foreign pickle; the message names the file
        raise CheckpointError(str(e)) from e
    base = _with_family(base, state, root / config_name)
    try:
        config = LayoutXLMConfig.from_dict(base, strict=ours)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{root / config_name}: {e}") from e

    found_task = "re" if "extractor.entity_emb.weight" in state else "ser"
    labels = None
    if ours:
        lab = _read_json(root / LABELS_FILE)
        found_task, labels = lab.get("task", meta.get("task")), lab.get("labels")
    if found_task not in TASKS:
        raise CheckpointError(f"{root}: unknown task {found_task!r}, expected one of {TASKS}")
    if task is not None and task != found_task:
        raise CheckpointError(f"{root} holds a {found_task} model, expected {task}")
    if meta.get("re_head") == "geo":  # a head-only RE checkpoint over a shared SER encoder
        names = list(meta.get("pair_features") or [])
        if not names or any(n not in PAIR_FEATURES for n in names):
            raise CheckpointError(f"{root / METADATA_FILE}: pair_features {names} are not features this version "
                                  f"computes ({list(PAIR_FEATURES)})")
        heads = 1 + len({k.split(".")[1] for k in state if k.startswith("more_extractors.")})
        model = ReHeadModel(config, len(names), heads=heads)
        model.pair_feature_names = tuple(names)  # the head's inputs, in the order it was trained with
    elif found_task == "ser":
        if "classifier.bias" not in state:
            raise CheckpointError(f"{root / STATE_FILE} is missing keys: ['classifier.bias', 'classifier.weight']")
        num_labels = int(np.shape(state["classifier.bias"])[0])
        if labels is None:
            labels = bio_labels(XFUND_CLASSES) if num_labels == 7 else [f"LABEL_{i}" for i in range(num_labels)]
        model = SerModel(config, num_labels)
    else:
        model = ReModel(config)
    state = _check_state(model, state, root / STATE_FILE)
    model.set_state_dict(state)
    model.eval()
    try:
        labels = _labels_for(found_task, labels, model)
    except ValueError as e:
        raise CheckpointError(f"{root / LABELS_FILE}: {e}") from e
    return Checkpoint(model=model, task=found_task, config=config, labels=labels, tokenizer_dir=tok_dir,
                      metadata=meta, folder=root)


def _export_layer(model: Any) -> Any:
    """The layer the inference program is traced from: SER gives (logits, last hidden), RE the pair logits."""
    from paddle import nn

    class SerLogitsHidden(nn.Layer):  # our SER exports also give the encoder states to a geometric RE head
        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, bbox, attention_mask, token_type_ids):  # noqa: ANN001, ANN201
            out = self.inner(input_ids, bbox, attention_mask, token_type_ids)
            return out.logits, out.hidden_states[-1]

    class SerImageLogitsHidden(SerLogitsHidden):
        def forward(self, input_ids, bbox, attention_mask, token_type_ids, image):  # noqa: ANN001, ANN201
            out = self.inner(input_ids, bbox, attention_mask, token_type_ids, image=image)
            return out.logits, out.hidden_states[-1]

    class HeadLogits(nn.Layer):
        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, hidden, entities, pairs, pair_features):  # noqa: ANN001, ANN201
            return self.inner(hidden, entities, pairs, pair_features).logits

    class RePairLogits(nn.Layer):
        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, bbox, attention_mask, token_type_ids, entities, pairs):  # noqa: ANN001, ANN201
            return self.inner(input_ids, bbox, attention_mask, entities, pairs, token_type_ids).logits

    class ReImagePairLogits(RePairLogits):
        def forward(self, input_ids, bbox, attention_mask, token_type_ids, image, entities, pairs):  # noqa: ANN001, ANN201, E501
            return self.inner(input_ids, bbox, attention_mask, entities, pairs, token_type_ids, image=image).logits

    if isinstance(model, ReHeadModel):
        return HeadLogits(model)
    image = model.config.use_visual_backbone
    if isinstance(model, SerModel):
        return SerImageLogitsHidden(model) if image else SerLogitsHidden(model)
    return ReImagePairLogits(model) if image else RePairLogits(model)


def export_inference(model_or_folder: Any, out_dir: str | os.PathLike, *,
                     tokenizer_dir: str | os.PathLike | None = None, labels: list[str] | None = None,
                     max_len: int = 512, allow_unverified: bool = False) -> Path:
    """Exports a KIE model to Paddle Inference (``paddle.jit.save``) with its tokenizer, labels and checksums.

    Args:
        model_or_folder: a SerModel/ReModel, a :class:`Checkpoint`, or a checkpoint folder
            (:func:`load_checkpoint` formats).
        out_dir: the export folder (created).
        tokenizer_dir: tokenizer folder; needed for a bare model, or for a folder without a tokenizer.
        labels: SER labels for a bare model (default XFUND's).
        max_len: the fixed window length of the program's inputs.
        allow_unverified: passed to :func:`load_checkpoint` for a folder.

    Returns:
        The export folder, loadable by ``models.kie.KiePredictor`` / ``models.paddle_infer.PaddlePredictor``.

    Raises:
        CheckpointError / ValueError: as :func:`load_checkpoint` and :func:`save_checkpoint`.
    """
    import paddle
    from paddle.static import InputSpec

    if isinstance(model_or_folder, str | os.PathLike):
        model_or_folder = load_checkpoint(model_or_folder, allow_unverified=allow_unverified,
                                          tokenizer_dir=tokenizer_dir)
    if isinstance(model_or_folder, Checkpoint):
        ck = model_or_folder
        model, labels, tokenizer_dir, source = ck.model, ck.labels, ck.tokenizer_dir, ck.metadata
    else:
        model, source = model_or_folder, {}
        if tokenizer_dir is None:
            raise CheckpointError("export_inference of a bare model needs tokenizer_dir")
    task, labels, tok, out = _prepare_output(model, labels, tokenizer_dir, out_dir)

    # The token axis is dynamic (at most max_len): the predictor cuts each batch to its longest window rounded up
    # to 64 tokens (models.features.batch_windows).
    specs = [InputSpec([None, None], "int64", "input_ids"), InputSpec([None, None, 4], "int64", "bbox"),
             InputSpec([None, None], "int64", "attention_mask"), InputSpec([None, None], "int64", "token_type_ids")]
    family: dict[str, Any] = {"family": model.config.family, "needs_image": model.config.use_visual_backbone}
    if model.config.use_visual_backbone and not isinstance(model, ReHeadModel):
        specs.append(InputSpec([None, 3, *KIE_IMAGE_SIZE], "float32", "image"))
        family["image"] = image_spec()
    extra_meta: dict[str, Any] = {}
    if isinstance(model, ReHeadModel):
        specs = [InputSpec([None, None, model.config.hidden_size], "float32", "hidden"),
                 InputSpec([None, None, 3], "int64", "entities"), InputSpec([None, None, 2], "int64", "pairs"),
                 InputSpec([None, None, model.num_pair_features], "float32", "pair_features")]
        extra_meta = {"re_head": "geo", "re_heads": model.heads, "encoder": source.get("encoder"),
                      "pair_features": list(getattr(model, "pair_feature_names", PAIR_FEATURES))}
    elif task == "re":
        specs += [InputSpec([None, None, 3], "int64", "entities"), InputSpec([None, None, 2], "int64", "pairs")]
    else:
        extra_meta = {"outputs": ["logits", "hidden"], "encoder_fingerprint": encoder_fingerprint(model.state_dict())}
    was_training = model.training
    model.eval()
    layer = paddle.jit.to_static(_export_layer(model), input_spec=specs, full_graph=True)
    paddle.jit.save(layer, str(out / "inference"))
    if was_training:
        model.train()

    (out / CONFIG_FILE).write_text(json.dumps(model.config.to_dict(), indent=2))
    (out / LABELS_FILE).write_text(json.dumps({"task": task, "labels": labels}, indent=2))
    shutil.copyfile(tok, out / TOKENIZER_FILE)
    meta = {"format": EXPORT_FORMAT_NAME, "version": 1, "task": task, "max_len": max_len,
            "input_names": [s.name for s in specs], "paddle_version": paddle.__version__, "dynamic_length": True,
            "source_metrics": source.get("metrics", {}), "training_data": source.get("training_data"),
            **family, **extra_meta}
    (out / METADATA_FILE).write_text(json.dumps(meta, indent=2, default=str))
    write_sha256sums(out)
    return out
