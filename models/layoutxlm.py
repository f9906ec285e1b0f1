"""LayoutXLM: VI-LayoutXLM (text + layout) and LayoutXLM with its visual backbone, with the SER and RE heads.

One file, the whole forward pass (the ResNeXt-FPN image encoder is ``models.visual_backbone``). Parameter names are
exactly PaddleNLP's ``LayoutXLMForTokenClassification`` / ``LayoutXLMForRelationExtraction`` names, so PaddleOCR's
published ``ser_vi_layoutxlm_xfund`` / ``re_vi_layoutxlm_xfund`` and ``ser_LayoutXLM_xfun_zh`` /
``re_LayoutXLM_xfun_zh`` ``model_state.pdparams`` load with ``set_state_dict`` unchanged (Paddle stores Linear
weights ``[in, out]`` on both sides).

Two families, chosen by ``LayoutXLMConfig.use_visual_backbone``:

* VI (``False``, ``vi-layoutxlm-base-uncased``): text tokens only. PaddleNLP appends 49 visual tokens (a 7x7 grid)
  to the text tokens, but in VI mode their attention mask is 0, and masked keys get score -1e10 before softmax, so
  they contribute exactly nothing to the text tokens' outputs. We drop them; ``visual_segment_embedding`` and
  ``visual_LayerNorm`` are kept as (unused) parameters and ``pooler`` too, so checkpoints load without missing or
  unexpected keys. This path is unchanged by the visual family: no image, no extra tokens, no extra work.
* LayoutXLM (``True``, ``layoutxlm-base-uncased``): the page image goes through ``models.visual_backbone`` to 49
  token features; each visual token ``k = row * 7 + col`` is
  ``visual_LN(visual_proj(feature_k) + pos[k] + layout(cell box_k) + visual_segment_embedding)`` with the cell box
  ``(xe[col], ye[row], xe[col + 1], ye[row + 1])``, ``xe = ye = arange(0, 8000, 1000) // 7``, and they are appended
  after the text tokens with attention mask 1 (PaddleNLP ``_calc_visual_bbox`` / ``_calc_img_embeddings``). The
  heads read the text positions only.

Relative attention biases (``has_relative_attention_bias``: 1-D over position ids; ``has_spatial_attention_bias``:
2-D over box ``x0`` and ``y1``) are PaddleNLP's: T5-style bidirectional log buckets, one Linear per table without
bias, added to every layer's attention scores (off in both published LayoutXLM-base models; LayoutLMv2 has them).
A one-hot times a Linear weight is computed as a row gather of that weight: the same numbers, without the
``(B, L, L, bins)`` one-hot tensor.

Embedding of text token t (PaddleNLP ``_calc_text_embeddings``)::

    LN(word[id] + pos[t] + concat(x[x0], y[y0], x[x1], y[y1], h[y1 - y0], w[x1 - x0]) + type[0])

with position ids 0..L-1 (not RoBERTa's pad-offset ids). Encoder: post-LN BERT layers, GELU (erf).

The RE head is vectorised over all candidate pairs of a batch (PaddleNLP loops in Python, about 20x slower on
a page, and its ``build_relation`` is broken in 2.8.1); the maths is PaddleNLP's ``REDecoder``: an entity is
``[hidden of its first token ; entity_emb(label)]``, two 2-layer ReLU FFNNs, a biaffine classifier with 2 classes.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

import paddle
import paddle.nn.functional as F
from paddle import nn

from models.layoutxlm_size import LayoutXLMSize
from models.visual_backbone import BLOCKS_PER_STAGE, VisualBackbone

__all__ = ["LayoutXLMConfig", "FAMILIES", "LayoutXLMModel", "SerModel", "SerOutput", "ReModel", "ReOutput",
           "REDecoder", "BiaffineAttention", "GeoREDecoder", "ReHeadModel", "IGNORE_INDEX"]

IGNORE_INDEX = -100
FAMILIES = ("vi-layoutxlm", "layoutxlm")
"""Model families: ``vi-layoutxlm`` (text + layout) and ``layoutxlm`` (text + layout + page image)."""


@dataclass(frozen=True)
class LayoutXLMConfig(LayoutXLMSize):
    """LayoutXLM backbone configuration; the defaults are ``vi-layoutxlm-base-uncased``.

    The size fields (``hidden_size``, layers, heads, ``coordinate_size``, ...) and their checks are those of
    :class:`models.layoutxlm_size.LayoutXLMSize`; this class adds the vocabulary, dropout and the family's
    switches. ``hidden_size`` must equal ``4 * coordinate_size + 2 * shape_size``. A tiny test config:
    ``LayoutXLMConfig(vocab_size=100, hidden_size=48, num_hidden_layers=2, num_attention_heads=2,
    intermediate_size=96, coordinate_size=8, shape_size=8)``.

    ``use_visual_backbone=True`` is ``layoutxlm-base-uncased`` (the page image is an input). The ``visual_*``
    fields size the ResNeXt-FPN (``models.visual_backbone``); PaddleNLP fixes them in its
    ``visual_backbone.yaml`` (depth 101, 32 x 8, stem 64, res2 256) and its configs do not carry them, so they
    default to those values. ``image_feature_pool_shape`` is ``(rows, cols, FPN channels)``.
    """

    vocab_size: int = 250002
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_2d_position_embeddings: int = 1024
    type_vocab_size: int = 1
    layer_norm_eps: float = 1e-5
    initializer_range: float = 0.02
    pad_token_id: int = 1
    has_visual_segment_embedding: bool = True
    use_visual_backbone: bool = False
    has_relative_attention_bias: bool = False
    has_spatial_attention_bias: bool = False
    rel_pos_bins: int = 32
    max_rel_pos: int = 128
    rel_2d_pos_bins: int = 64
    max_rel_2d_pos: int = 256
    image_feature_pool_shape: tuple[int, int, int] = (7, 7, 256)
    visual_depth: int = 101
    visual_num_groups: int = 32
    visual_width_per_group: int = 8
    visual_stem_channels: int = 64
    visual_res2_channels: int = 256

    @property
    def family(self) -> str:
        """``"layoutxlm"`` with the visual backbone (the model needs the page image), else ``"vi-layoutxlm"``."""
        return FAMILIES[1] if self.use_visual_backbone else FAMILIES[0]

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "image_feature_pool_shape", tuple(int(v) for v in self.image_feature_pool_shape))
        if len(self.image_feature_pool_shape) != 3 or min(self.image_feature_pool_shape) < 1:
            raise ValueError(f"image_feature_pool_shape={list(self.image_feature_pool_shape)} must be 3 positive "
                             f"ints (rows, cols, channels)")
        if self.use_visual_backbone and self.visual_depth not in BLOCKS_PER_STAGE:
            raise ValueError(f"visual_depth={self.visual_depth} is not supported, expected one of "
                             f"{sorted(BLOCKS_PER_STAGE)}")
        for name in ("rel_pos_bins", "rel_2d_pos_bins"):
            if getattr(self, name) < 4:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 4")
        if self.hidden_act != "gelu":
            raise ValueError(f"hidden_act={self.hidden_act!r} is not supported, expected 'gelu'")
        for name in ("vocab_size", "max_2d_position_embeddings", "type_vocab_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be positive")

    def to_dict(self) -> dict[str, Any]:
        """The config as a JSON-ready dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any], *, strict: bool = True) -> LayoutXLMConfig:
        """Builds a config from :meth:`to_dict` output or a PaddleNLP ``config.json``/``init_args`` dict.

        Args:
            d: the dict.
            strict: raise on keys this class does not know; with False they are ignored (``fast_qkv=True``
                always raises).

        Returns:
            The config.

        Raises:
            ValueError: unknown keys (strict), or a PaddleNLP feature this implementation does not have
                (``fast_qkv``, LayoutLMv2's fused QKV projection).
        """
        known = {f.name for f in fields(cls)}
        if d.get("fast_qkv"):
            raise ValueError("config sets fast_qkv=True (LayoutLMv2's fused QKV projection), which this LayoutXLM "
                             "implementation does not support")
        unknown = sorted(set(d) - known)
        if strict and unknown:
            raise ValueError(f"unknown LayoutXLMConfig keys {unknown}, expected a subset of {sorted(known)}")
        return cls(**{k: v for k, v in d.items() if k in known})


# ----------------------------------------------------------------------------------------------- backbone


class LayoutXLMEmbeddings(nn.Layer):
    """Word, 1-D position, 2-D layout and token-type embeddings (PaddleNLP names)."""

    def __init__(self, config: LayoutXLMConfig) -> None:
        super().__init__()
        c = config
        self.word_embeddings = nn.Embedding(c.vocab_size, c.hidden_size, padding_idx=0)
        self.position_embeddings = nn.Embedding(c.max_position_embeddings, c.hidden_size)
        self.x_position_embeddings = nn.Embedding(c.max_2d_position_embeddings, c.coordinate_size)
        self.y_position_embeddings = nn.Embedding(c.max_2d_position_embeddings, c.coordinate_size)
        self.h_position_embeddings = nn.Embedding(c.max_2d_position_embeddings, c.shape_size)
        self.w_position_embeddings = nn.Embedding(c.max_2d_position_embeddings, c.shape_size)
        self.token_type_embeddings = nn.Embedding(c.type_vocab_size, c.hidden_size)
        self.LayerNorm = nn.LayerNorm(c.hidden_size, epsilon=c.layer_norm_eps)
        self.dropout = nn.Dropout(c.hidden_dropout_prob)
        self.register_buffer("position_ids", paddle.arange(c.max_position_embeddings, dtype="int64").unsqueeze(0))

    def forward(self, input_ids: paddle.Tensor, bbox: paddle.Tensor, token_type_ids: paddle.Tensor) -> paddle.Tensor:
        """Text embeddings ``(B, L, H)`` from ids ``(B, L)``, boxes ``(B, L, 4)`` and type ids ``(B, L)``."""
        position_ids = self.position_ids[:, :paddle.shape(input_ids)[1]]  # (1, L): 0..L-1
        spatial = paddle.concat([
            self.x_position_embeddings(bbox[:, :, 0]),
            self.y_position_embeddings(bbox[:, :, 1]),
            self.x_position_embeddings(bbox[:, :, 2]),
            self.y_position_embeddings(bbox[:, :, 3]),
            self.h_position_embeddings(bbox[:, :, 3] - bbox[:, :, 1]),
            self.w_position_embeddings(bbox[:, :, 2] - bbox[:, :, 0]),
        ], axis=-1)  # (B, L, H)
        emb = (self.word_embeddings(input_ids) + self.position_embeddings(position_ids) + spatial
               + self.token_type_embeddings(token_type_ids))
        return self.dropout(self.LayerNorm(emb))


class LayoutXLMSelfAttention(nn.Layer):
    """Multi-head self-attention without relative biases."""

    def __init__(self, config: LayoutXLMConfig) -> None:
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.query = nn.Linear(config.hidden_size, config.hidden_size)
        self.key = nn.Linear(config.hidden_size, config.hidden_size)
        self.value = nn.Linear(config.hidden_size, config.hidden_size)
        self.dropout = nn.Dropout(config.attention_probs_dropout_prob)

    def _split(self, x: paddle.Tensor) -> paddle.Tensor:
        # 0 copies the input dim, so the same code runs with dynamic shapes when exported.
        return x.reshape([0, 0, self.num_heads, self.head_dim]).transpose([0, 2, 1, 3])  # (B, nH, L, d)

    def forward(self, hidden: paddle.Tensor, mask_bias: paddle.Tensor) -> paddle.Tensor:
        """Context ``(B, L, H)``; ``mask_bias`` ``(B, 1, 1, L)`` is 0 on tokens and -1e10 on padding."""
        q = self._split(self.query(hidden)) / math.sqrt(self.head_dim)
        k = self._split(self.key(hidden))
        v = self._split(self.value(hidden))
        # PaddleNLP replaces masked scores by -1e10; adding -1e10 gives the same softmax (exp underflows to 0).
        scores = paddle.matmul(q, k, transpose_y=True) + mask_bias  # (B, nH, L, L)
        probs = self.dropout(F.softmax(scores, axis=-1))
        ctx = paddle.matmul(probs, v).transpose([0, 2, 1, 3])  # (B, L, nH, d)
        return ctx.reshape([0, 0, -1])


class LayoutXLMSelfOutput(nn.Layer):
    """Attention output projection + residual + LayerNorm."""

    def __init__(self, config: LayoutXLMConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, epsilon=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden: paddle.Tensor, residual: paddle.Tensor) -> paddle.Tensor:
        """``LN(dropout(dense(hidden)) + residual)``."""
        return self.LayerNorm(self.dropout(self.dense(hidden)) + residual)


class LayoutXLMAttention(nn.Layer):
    """``self`` + ``output`` (PaddleNLP names)."""

    def __init__(self, config: LayoutXLMConfig) -> None:
        super().__init__()
        self.self = LayoutXLMSelfAttention(config)
        self.output = LayoutXLMSelfOutput(config)

    def forward(self, hidden: paddle.Tensor, mask_bias: paddle.Tensor) -> paddle.Tensor:
        """Attention block output ``(B, L, H)``."""
        return self.output(self.self(hidden, mask_bias), hidden)


class LayoutXLMIntermediate(nn.Layer):
    """FFN up-projection with exact (erf) GELU."""

    def __init__(self, config: LayoutXLMConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size)
        self.intermediate_act_fn = nn.GELU()

    def forward(self, hidden: paddle.Tensor) -> paddle.Tensor:
        """``gelu(dense(hidden))`` ``(B, L, I)``."""
        return self.intermediate_act_fn(self.dense(hidden))


class LayoutXLMOutput(nn.Layer):
    """FFN down-projection + residual + LayerNorm."""

    def __init__(self, config: LayoutXLMConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.intermediate_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, epsilon=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden: paddle.Tensor, residual: paddle.Tensor) -> paddle.Tensor:
        """``LN(dropout(dense(hidden)) + residual)`` ``(B, L, H)``."""
        return self.LayerNorm(self.dropout(self.dense(hidden)) + residual)


class LayoutXLMLayer(nn.Layer):
    """One post-LN transformer layer."""

    def __init__(self, config: LayoutXLMConfig) -> None:
        super().__init__()
        self.attention = LayoutXLMAttention(config)
        self.intermediate = LayoutXLMIntermediate(config)
        self.output = LayoutXLMOutput(config)

    def forward(self, hidden: paddle.Tensor, mask_bias: paddle.Tensor) -> paddle.Tensor:
        """Layer output ``(B, L, H)``."""
        att = self.attention(hidden, mask_bias)
        return self.output(self.intermediate(att), att)


def relative_position_bucket(relative: paddle.Tensor, num_buckets: int, max_distance: int) -> paddle.Tensor:
    """T5-style bidirectional buckets of int64 offsets (PaddleNLP ``relative_position_bucket``).

    Half the buckets are for positive offsets; within each half, offsets below ``num_buckets // 4`` get their
    own bucket and larger ones share logarithmically wider buckets up to ``max_distance``.
    """
    half = num_buckets // 2
    ret = (relative > 0).astype("int64") * half
    n = paddle.abs(relative)
    max_exact = half // 2
    # The log of 0 is never selected (n < max_exact there); clipping only keeps the discarded branch finite.
    large = max_exact + (paddle.log(n.clip(min=1).astype("float32") / max_exact)
                         / math.log(max_distance / max_exact) * (half - max_exact)).astype("int64")
    large = paddle.minimum(large, paddle.full_like(large, half - 1))
    return ret + paddle.where(n < max_exact, n, large)


class LayoutXLMEncoder(nn.Layer):
    """The stack of layers (``encoder.layer.N``), with the optional relative-position bias tables."""

    def __init__(self, config: LayoutXLMConfig) -> None:
        super().__init__()
        self.config = config
        self.layer = nn.LayerList([LayoutXLMLayer(config) for _ in range(config.num_hidden_layers)])
        heads = config.num_attention_heads
        if config.has_relative_attention_bias:
            self.rel_pos_bias = nn.Linear(config.rel_pos_bins, heads, bias_attr=False)
        if config.has_spatial_attention_bias:
            self.rel_pos_x_bias = nn.Linear(config.rel_2d_pos_bins, heads, bias_attr=False)
            self.rel_pos_y_bias = nn.Linear(config.rel_2d_pos_bins, heads, bias_attr=False)

    @staticmethod
    def _table_bias(table: nn.Linear, coords: paddle.Tensor, bins: int, max_distance: int) -> paddle.Tensor:
        """``(B, nH, L, L)`` bias of ``coords[j] - coords[i]``: ``one_hot(bucket) @ W`` as a row gather of W."""
        rel = coords.unsqueeze(-2) - coords.unsqueeze(-1)  # (B, L, L): [i, j] = c[j] - c[i]
        bucket = relative_position_bucket(rel, bins, max_distance)
        return F.embedding(bucket, table.weight).transpose([0, 3, 1, 2])  # (B, nH, L, L)

    def attention_bias(self, position_ids: paddle.Tensor, bbox: paddle.Tensor) -> paddle.Tensor | None:
        """The relative 1-D + 2-D bias added to every layer's scores, or None when the config has neither.

        Args:
            position_ids: ``(B, L)`` int64 position ids of the whole sequence.
            bbox: ``(B, L, 4)`` int64 boxes of the whole sequence (the 2-D bias reads ``x0`` and ``y1``).
        """
        c = self.config
        bias = None
        if c.has_relative_attention_bias:
            bias = self._table_bias(self.rel_pos_bias, position_ids, c.rel_pos_bins, c.max_rel_pos)
        if c.has_spatial_attention_bias:
            xy = (self._table_bias(self.rel_pos_x_bias, bbox[:, :, 0], c.rel_2d_pos_bins, c.max_rel_2d_pos)
                  + self._table_bias(self.rel_pos_y_bias, bbox[:, :, 3], c.rel_2d_pos_bins, c.max_rel_2d_pos))
            bias = xy if bias is None else bias + xy
        return bias

    def forward(self, hidden: paddle.Tensor, mask_bias: paddle.Tensor) -> list[paddle.Tensor]:
        """Every layer's output, ``num_hidden_layers`` tensors ``(B, L, H)``.

        ``mask_bias`` is ``(B, 1, 1, L)`` (padding only) or ``(B, nH, L, L)`` (padding + relative biases).
        """
        outs = []
        for layer in self.layer:
            hidden = layer(hidden, mask_bias)
            outs.append(hidden)
        return outs


class LayoutXLMPooler(nn.Layer):
    """``tanh(dense(seq[:, 0]))``; kept so checkpoints load without unexpected keys (SER/RE do not use it)."""

    def __init__(self, config: LayoutXLMConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.activation = nn.Tanh()

    def forward(self, hidden: paddle.Tensor) -> paddle.Tensor:
        """Pooled ``(B, H)``."""
        return self.activation(self.dense(hidden[:, 0]))


class LayoutXLMModel(nn.Layer):
    """The LayoutXLM backbone (the ``layoutxlm.*`` part of a checkpoint); text-only unless the config has the
    visual backbone."""

    def __init__(self, config: LayoutXLMConfig) -> None:
        # Paddle keeps its dynamic-graph mode per thread, seeded from the thread that first imported paddle: when
        # that was a Beam worker thread, other threads start in static mode and building a Layer fails
        # ("registered buffer should be a Paddle.Tensor, but received Value"). Models are always built eagerly.
        if not paddle.in_dynamic_mode():
            paddle.disable_static()
        super().__init__()
        self.config = config
        self.embeddings = LayoutXLMEmbeddings(config)
        if config.use_visual_backbone:
            rows, cols, channels = config.image_feature_pool_shape
            self.visual = VisualBackbone(config.visual_depth, config.visual_num_groups,
                                         config.visual_width_per_group, config.visual_stem_channels,
                                         config.visual_res2_channels, channels, (rows, cols))
            self.visual_proj = nn.Linear(channels, config.hidden_size)
            self.visual_dropout = nn.Dropout(config.hidden_dropout_prob)
            xe = [i * 1000 // cols for i in range(cols + 1)]
            ye = [i * 1000 // rows for i in range(rows + 1)]
            cells = [[xe[j], ye[i], xe[j + 1], ye[i + 1]] for i in range(rows) for j in range(cols)]
            self.register_buffer("visual_bbox", paddle.to_tensor([cells], dtype="int64"), persistable=False)
            self.register_buffer("visual_position_ids", paddle.arange(rows * cols, dtype="int64").unsqueeze(0),
                                 persistable=False)
        if config.has_visual_segment_embedding:  # unused in VI mode, kept for checkpoint compatibility
            self.visual_segment_embedding = self.create_parameter(shape=[config.hidden_size], dtype="float32")
        self.visual_LayerNorm = nn.LayerNorm(config.hidden_size, epsilon=config.layer_norm_eps)
        self.encoder = LayoutXLMEncoder(config)
        self.pooler = LayoutXLMPooler(config)
        self._relative = config.has_relative_attention_bias or config.has_spatial_attention_bias

    def _visual_embeddings(self, image: paddle.Tensor) -> paddle.Tensor:
        """The visual tokens ``(B, rows * cols, H)`` of page images ``(B, 3, 224, 224)``."""
        emb = self.embeddings
        box = self.visual_bbox  # (1, V, 4)
        spatial = paddle.concat([
            emb.x_position_embeddings(box[:, :, 0]), emb.y_position_embeddings(box[:, :, 1]),
            emb.x_position_embeddings(box[:, :, 2]), emb.y_position_embeddings(box[:, :, 3]),
            emb.h_position_embeddings(box[:, :, 3] - box[:, :, 1]),
            emb.w_position_embeddings(box[:, :, 2] - box[:, :, 0]),
        ], axis=-1)  # (1, V, H)
        visual = self.visual_proj(self.visual(image.astype("float32")))  # (B, V, H)
        tokens = visual + emb.position_embeddings(self.visual_position_ids) + spatial
        if self.config.has_visual_segment_embedding:
            tokens = tokens + self.visual_segment_embedding
        return self.visual_dropout(self.visual_LayerNorm(tokens))

    def forward(self, input_ids: paddle.Tensor, bbox: paddle.Tensor, attention_mask: paddle.Tensor,
                token_type_ids: paddle.Tensor | None = None, image: paddle.Tensor | None = None
                ) -> list[paddle.Tensor]:
        """Runs the encoder.

        Args:
            input_ids: ``(B, L)`` int64.
            bbox: ``(B, L, 4)`` int64 on the 0..1000 grid.
            attention_mask: ``(B, L)``, 1 on tokens, 0 on padding.
            token_type_ids: ``(B, L)`` int64, default zeros.
            image: ``(B, 3, 224, 224)`` float32 page images (``models.page_image``); required with the visual
                backbone, ignored without it.

        Returns:
            Each encoder layer's output ``(B, L, H)`` at the text positions; the last one is the sequence output.

        Raises:
            ValueError: a model with the visual backbone called without ``image``.
        """
        if token_type_ids is None:
            token_type_ids = paddle.zeros_like(input_ids)
        emb = self.embeddings(input_ids, bbox, token_type_ids)  # (B, L, H)
        if not self.config.use_visual_backbone:
            mask_bias = (1.0 - attention_mask.astype(emb.dtype)).unsqueeze([1, 2]) * -1e10  # (B, 1, 1, L)
            if self._relative:
                positions = self.embeddings.position_ids[:, :paddle.shape(input_ids)[1]].expand_as(input_ids)
                mask_bias = mask_bias + self.encoder.attention_bias(positions, bbox)  # (B, nH, L, L)
            return self.encoder(emb, mask_bias)
        if image is None:
            raise ValueError("this LayoutXLM model has a visual backbone: pass the page image (B, 3, 224, 224) "
                             "as models.page_image prepares it")
        visual = self._visual_embeddings(image)  # (B, V, H)
        n_text = paddle.shape(input_ids)[1]
        hidden = paddle.concat([emb, visual], axis=1)  # (B, L + V, H)
        mask = paddle.concat([attention_mask.astype(emb.dtype), paddle.ones_like(visual[:, :, 0])], axis=1)
        mask_bias = (1.0 - mask).unsqueeze([1, 2]) * -1e10  # (B, 1, 1, L + V)
        if self._relative:
            text_pos = self.embeddings.position_ids[:, :n_text].expand_as(input_ids)
            positions = paddle.concat([text_pos, self.visual_position_ids.expand_as(visual[:, :, 0]).astype(
                "int64")], axis=1)
            boxes = paddle.concat([bbox.astype("int64"), self.visual_bbox.expand(
                [paddle.shape(bbox)[0], -1, -1])], axis=1)
            mask_bias = mask_bias + self.encoder.attention_bias(positions, boxes)
        return [h[:, :n_text] for h in self.encoder(hidden, mask_bias)]


def _init_weights(layer: nn.Layer, std: float) -> None:
    """PaddleNLP's init: normal(0, std) for Linear and Embedding weights, zero biases, LayerNorm (1, 0)."""
    for sub in layer.sublayers(include_self=True):
        if isinstance(sub, nn.Linear | nn.Embedding):
            sub.weight.set_value(paddle.normal(0.0, std, sub.weight.shape))
            if isinstance(sub, nn.Linear) and sub.bias is not None:
                sub.bias.set_value(paddle.zeros(sub.bias.shape))
        elif isinstance(sub, nn.LayerNorm):
            sub.weight.set_value(paddle.ones(sub.weight.shape))
            sub.bias.set_value(paddle.zeros(sub.bias.shape))


# ----------------------------------------------------------------------------------------------- SER


@dataclass
class SerOutput:
    """SER forward output.

    Attributes:
        logits: ``(B, L, C)``.
        loss: mean token cross-entropy over tokens with ``attention_mask == 1`` and label != -100, or None.
        hidden_states: each encoder layer's output ``(B, L, H)`` (UDML feature loss).
    """

    logits: paddle.Tensor
    loss: paddle.Tensor | None
    hidden_states: list[paddle.Tensor]


class SerModel(nn.Layer):
    """(VI-)LayoutXLM token classifier (``LayoutXLMForTokenClassification``; classifier dropout 0 as PaddleOCR).

    Args:
        config: backbone config.
        num_labels: number of BIO labels (7 for XFUND).
    """

    def __init__(self, config: LayoutXLMConfig, num_labels: int) -> None:
        super().__init__()
        if num_labels < 1:
            raise ValueError(f"num_labels={num_labels} must be positive")
        self.config = config
        self.num_labels = num_labels
        self.layoutxlm = LayoutXLMModel(config)
        self.classifier = nn.Linear(config.hidden_size, num_labels)
        _init_weights(self, config.initializer_range)

    def forward(self, input_ids: paddle.Tensor, bbox: paddle.Tensor, attention_mask: paddle.Tensor,
                token_type_ids: paddle.Tensor | None = None, labels: paddle.Tensor | None = None,
                image: paddle.Tensor | None = None) -> SerOutput:
        """Token logits, and the loss when ``labels`` ``(B, L)`` are given (PaddleOCR VQASerTokenLayoutLMLoss).

        Args:
            input_ids: ``(B, L)`` int64.
            bbox: ``(B, L, 4)`` int64.
            attention_mask: ``(B, L)`` int64.
            token_type_ids: ``(B, L)`` int64 or None.
            labels: ``(B, L)`` int64 label ids, -100 ignored.
            image: ``(B, 3, 224, 224)`` float32 page images; required by the ``layoutxlm`` family only.

        Returns:
            :class:`SerOutput`.
        """
        hidden_states = self.layoutxlm(input_ids, bbox, attention_mask, token_type_ids, image)
        logits = self.classifier(hidden_states[-1])  # (B, L, C)
        loss = None
        if labels is not None:
            active = attention_mask.astype("int64") == 1
            target = paddle.where(active, labels.astype("int64"), paddle.full_like(labels, IGNORE_INDEX, "int64"))
            target = target.reshape([-1, 1])
            # Paddle's reduction="mean" divides by all tokens, ignored ones included: average explicitly.
            ce = F.cross_entropy(logits.reshape([-1, self.num_labels]), target, ignore_index=IGNORE_INDEX,
                                 reduction="none")  # (B*L, 1), 0 where ignored
            kept = (target != IGNORE_INDEX).astype(ce.dtype)
            loss = ce.sum() / kept.sum().clip(min=1.0)
        return SerOutput(logits=logits, loss=loss, hidden_states=hidden_states)


# ----------------------------------------------------------------------------------------------- RE


class BiaffineAttention(nn.Layer):
    """``bilinear(u, v) + linear([u; v])`` with 2 output classes (PaddleNLP names)."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.bilinear = nn.Bilinear(in_features, in_features, out_features, bias_attr=False)
        self.linear = nn.Linear(2 * in_features, out_features)

    def forward(self, u: paddle.Tensor, v: paddle.Tensor) -> paddle.Tensor:
        """Logits ``(N, out)`` for ``u``, ``v`` ``(N, in)``."""
        return self.bilinear(u, v) + self.linear(paddle.concat([u, v], axis=-1))


def _projection(hidden: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(nn.Linear(2 * hidden, hidden), nn.ReLU(), nn.Dropout(dropout),
                         nn.Linear(hidden, hidden // 2), nn.ReLU(), nn.Dropout(dropout))


class REDecoder(nn.Layer):
    """The relation head (``extractor.*``), vectorised over pairs."""

    def __init__(self, hidden_size: int, dropout: float) -> None:
        super().__init__()
        self.entity_emb = nn.Embedding(3, hidden_size)
        self.ffnn_head = _projection(hidden_size, dropout)
        self.ffnn_tail = _projection(hidden_size, dropout)
        self.rel_classifier = BiaffineAttention(hidden_size // 2, 2)

    def forward(self, seq: paddle.Tensor, entities: paddle.Tensor, pairs: paddle.Tensor) -> paddle.Tensor:
        """Pair logits ``(B, P, 2)``.

        Args:
            seq: sequence output ``(B, L, H)``.
            entities: ``(B, E, 3)`` rows ``(start, end, label)``, -1 padding.
            pairs: ``(B, P, 2)`` ``(head entity, tail entity)`` indices, -1 padding (padded pairs get
                meaningless logits; mask them).
        """
        batch = paddle.shape(seq)[0]  # dynamic when exported
        ent = entities.clip(min=0)
        prs = pairs.clip(min=0)

        def represent(side: int) -> paddle.Tensor:
            idx = prs[:, :, side]  # (B, P) entity index
            start = paddle.take_along_axis(ent[:, :, 0], idx, axis=1)  # (B, P) first token
            label = paddle.take_along_axis(ent[:, :, 2], idx, axis=1)  # (B, P)
            tok = paddle.take_along_axis(seq, start.unsqueeze(-1), axis=1)  # (B, P, H), index broadcast over H
            return paddle.concat([tok, self.entity_emb(label)], axis=-1).reshape([-1, 2 * seq.shape[-1]])

        heads = self.ffnn_head(represent(0))  # (B*P, H/2)
        tails = self.ffnn_tail(represent(1))
        logits = self.rel_classifier(heads, tails)  # (B*P, 2)
        return logits.reshape([batch, -1, 2])


@dataclass
class ReOutput:
    """RE forward output.

    Attributes:
        loss: cross-entropy mean over each document's valid pairs, summed over the batch (PaddleNLP), or None.
        logits: pair logits ``(B, P, 2)``; class 1 = linked.
        hidden_states: each encoder layer's output ``(B, L, H)``.
    """

    loss: paddle.Tensor | None
    logits: paddle.Tensor
    hidden_states: list[paddle.Tensor]


class ReModel(nn.Layer):
    """(VI-)LayoutXLM relation extraction (``LayoutXLMForRelationExtraction``; sequence dropout 0 as PaddleOCR).

    Args:
        config: backbone config.
    """

    def __init__(self, config: LayoutXLMConfig) -> None:
        super().__init__()
        self.config = config
        self.layoutxlm = LayoutXLMModel(config)
        self.extractor = REDecoder(config.hidden_size, config.hidden_dropout_prob)
        # normal(0, 0.02) for the backbone and the entity embedding only: the head's Linear / Bilinear layers keep
        # Paddle's Xavier init. With 0.02 the pair term u^T W v starts ~1e-4 at small widths and training sits on
        # the "never linked" plateau (see tests/models/test_kie_re_init.py).
        _init_weights(self.layoutxlm, config.initializer_range)
        _init_weights(self.extractor.entity_emb, config.initializer_range)

    def forward(self, input_ids: paddle.Tensor, bbox: paddle.Tensor, attention_mask: paddle.Tensor,
                entities: paddle.Tensor, pairs: paddle.Tensor, token_type_ids: paddle.Tensor | None = None,
                pair_labels: paddle.Tensor | None = None, image: paddle.Tensor | None = None) -> ReOutput:
        """Pair logits, and the loss when ``pair_labels`` are given.

        Args:
            input_ids: ``(B, L)`` int64.
            bbox: ``(B, L, 4)`` int64.
            attention_mask: ``(B, L)`` int64.
            entities: ``(B, E, 3)`` int64 ``(start, end, label)`` rows, -1 padding
                (labels: HEADER 0, QUESTION 1, ANSWER 2).
            pairs: ``(B, P, 2)`` int64 candidate ``(question, answer)`` entity indices, -1 padding.
            token_type_ids: ``(B, L)`` int64 or None.
            pair_labels: ``(B, P)`` int64, 1 linked / 0 not, ignored where ``pairs`` is padding.
            image: ``(B, 3, 224, 224)`` float32 page images; required by the ``layoutxlm`` family only.

        Returns:
            :class:`ReOutput`.
        """
        hidden_states = self.layoutxlm(input_ids, bbox, attention_mask, token_type_ids, image)
        logits = self.extractor(hidden_states[-1], entities, pairs)  # (B, P, 2)
        loss = None
        if pair_labels is not None:
            valid = (pairs[:, :, 0] >= 0).astype(logits.dtype)  # (B, P)
            ce = F.cross_entropy(logits.reshape([-1, 2]), pair_labels.clip(min=0).reshape([-1, 1]).astype("int64"),
                                 reduction="none").reshape(valid.shape)  # (B, P)
            per_doc = (ce * valid).sum(axis=1) / valid.sum(axis=1).clip(min=1.0)
            loss = per_doc.sum()
        return ReOutput(loss=loss, logits=logits, hidden_states=hidden_states)


# ----------------------------------------------------------------------------------------------- geometric RE head


def _pair_loss(logits: paddle.Tensor, pairs: paddle.Tensor, pair_labels: paddle.Tensor) -> paddle.Tensor:
    """Cross-entropy mean over each window's valid pairs, summed over the batch (PaddleNLP's RE loss)."""
    valid = (pairs[:, :, 0] >= 0).astype(logits.dtype)  # (B, P)
    ce = F.cross_entropy(logits.reshape([-1, 2]), pair_labels.clip(min=0).reshape([-1, 1]).astype("int64"),
                         reduction="none").reshape(valid.shape)  # (B, P)
    return ((ce * valid).sum(axis=1) / valid.sum(axis=1).clip(min=1.0)).sum()


class GeoREDecoder(nn.Layer):
    """A layout-aware relation head for models trained here (not a PaddleOCR layout).

    An entity is ``[hidden of its first token ; mean hidden over its tokens ; label embedding]``; the two ends go
    through PaddleNLP-style 2-layer ReLU projections, and the pair's relative geometry
    (``models.features.pair_features``) through a small MLP. Logits = biaffine(head, tail) + an MLP over
    ``[head ; tail ; geometry]``, 2 classes.

    Args:
        hidden_size: the encoder's width.
        num_pair_features: the length of a pair's geometry vector.
        dropout: dropout inside the head.
        geo_size: width of the geometry MLP.
    """

    def __init__(self, hidden_size: int, num_pair_features: int, dropout: float, geo_size: int = 64) -> None:
        super().__init__()
        half = hidden_size // 2
        self.entity_emb = nn.Embedding(3, hidden_size)
        self.ffnn_head = nn.Sequential(nn.Linear(3 * hidden_size, hidden_size), nn.ReLU(), nn.Dropout(dropout),
                                       nn.Linear(hidden_size, half), nn.ReLU(), nn.Dropout(dropout))
        self.ffnn_tail = nn.Sequential(nn.Linear(3 * hidden_size, hidden_size), nn.ReLU(), nn.Dropout(dropout),
                                       nn.Linear(hidden_size, half), nn.ReLU(), nn.Dropout(dropout))
        self.geo = nn.Sequential(nn.Linear(num_pair_features, geo_size), nn.ReLU(),
                                 nn.Linear(geo_size, geo_size), nn.ReLU())
        self.pair_mlp = nn.Sequential(nn.Linear(2 * half + geo_size, hidden_size), nn.ReLU(), nn.Dropout(dropout),
                                      nn.Linear(hidden_size, 2))
        self.rel_classifier = BiaffineAttention(half, 2)

    def forward(self, seq: paddle.Tensor, entities: paddle.Tensor, pairs: paddle.Tensor,
                pair_features: paddle.Tensor) -> paddle.Tensor:
        """Pair logits ``(B, P, 2)``.

        Args:
            seq: sequence output ``(B, L, H)``.
            entities: ``(B, E, 3)`` rows ``(start, end, label)``, -1 padding.
            pairs: ``(B, P, 2)`` ``(question, answer)`` entity indices, -1 padding (padded pairs get meaningless
                logits; mask them).
            pair_features: ``(B, P, F)`` float32 geometry of each pair.
        """
        batch = paddle.shape(seq)[0]
        ent = entities.clip(min=0)
        prs = pairs.clip(min=0)
        # Each entity is represented once (B, E, .) and then gathered per pair: a page has ~10x more candidate
        # pairs than entities. Prefix sums give every span's mean in one gather: (cs[end] - cs[start]) / length.
        cs = paddle.concat([paddle.zeros_like(seq[:, :1]), paddle.cumsum(seq, axis=1)], axis=1)  # (B, L+1, H)
        start = ent[:, :, 0:1]  # (B, E, 1)
        end = paddle.maximum(ent[:, :, 1:2], start + 1)
        first = paddle.take_along_axis(seq, start, axis=1)  # (B, E, H)
        mean = ((paddle.take_along_axis(cs, end, axis=1) - paddle.take_along_axis(cs, start, axis=1))
                / (end - start).astype(seq.dtype))
        entity = paddle.concat([first, mean, self.entity_emb(ent[:, :, 2])], axis=-1)  # (B, E, 3H)

        def per_pair(ffnn: nn.Layer, side: int) -> paddle.Tensor:
            rep = ffnn(entity)  # (B, E, H/2)
            return paddle.take_along_axis(rep, prs[:, :, side:side + 1], axis=1).reshape([-1, rep.shape[-1]])

        heads = per_pair(self.ffnn_head, 0)  # (B*P, H/2)
        tails = per_pair(self.ffnn_tail, 1)
        geo = self.geo(pair_features.reshape([-1, pair_features.shape[-1]]))  # (B*P, G)
        logits = self.rel_classifier(heads, tails) + self.pair_mlp(paddle.concat([heads, tails, geo], axis=-1))
        return logits.reshape([batch, -1, 2])


class ReHeadModel(nn.Layer):
    """The geometric RE head alone, on the hidden states of a (shared) SER encoder.

    One encoder serves SER and RE: the exported SER program also outputs its last hidden states, and this head
    reads them, so a page runs the encoder once and the RE folder holds only the head. The parameter names are
    ``extractor.*``; the head records which encoder it was trained on (``models.checkpoint``).

    With ``heads > 1`` it is an average of independently initialised heads (``more_extractors.{i}.*`` beside
    ``extractor.*``), trained side by side on the same batches, each on its own loss: the logits are
    ``log(mean_k softmax(logits_k))``, so a softmax of them is the heads' mean link probability.

    Args:
        config: the encoder's config (its ``hidden_size``; ``hidden_dropout_prob`` is the head's dropout).
        num_pair_features: length of a pair's geometry vector.
        heads: how many heads are averaged (1: the single head of every earlier model).
    """

    def __init__(self, config: LayoutXLMConfig, num_pair_features: int, heads: int = 1) -> None:
        if not paddle.in_dynamic_mode():
            paddle.disable_static()
        if heads < 1:
            raise ValueError(f"heads must be >= 1, got {heads}")
        super().__init__()
        self.config = config
        self.num_pair_features = num_pair_features
        self.heads = heads
        decoders = [GeoREDecoder(config.hidden_size, num_pair_features, config.hidden_dropout_prob)
                    for _ in range(heads)]
        for decoder in decoders:
            _init_weights(decoder.entity_emb, config.initializer_range)
        self.extractor = decoders[0]
        self.more_extractors = nn.LayerList(decoders[1:])  # no parameters for a single head

    def forward(self, hidden: paddle.Tensor, entities: paddle.Tensor, pairs: paddle.Tensor,
                pair_features: paddle.Tensor, pair_labels: paddle.Tensor | None = None) -> ReOutput:
        """Pair logits (and the loss when ``pair_labels`` are given) from encoder states ``(B, L, H)``."""
        each = [e(hidden, entities, pairs, pair_features) for e in (self.extractor, *self.more_extractors)]
        logits = each[0] if len(each) == 1 else paddle.log(paddle.stack([F.softmax(x, axis=-1) for x in each])
                                                           .mean(axis=0))
        loss = paddle.add_n([_pair_loss(x, pairs, pair_labels) for x in each]) if pair_labels is not None else None
        return ReOutput(loss=loss, logits=logits, hidden_states=[hidden])
