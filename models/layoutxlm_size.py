"""The size of a LayoutXLM backbone, without Paddle: what a from-scratch training run chooses.

``models.layoutxlm.LayoutXLMConfig`` extends :class:`LayoutXLMSize` with the vocabulary, dropout and the model
family's switches, so the size fields are written once; ``training.config`` presets name sizes without importing
Paddle.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["LayoutXLMSize"]


@dataclass(frozen=True)
class LayoutXLMSize:
    """Backbone size; the defaults are ``vi-layoutxlm-base-uncased``.

    ``hidden_size`` must equal ``4 * coordinate_size + 2 * shape_size`` (the 2-D layout embedding concatenates
    x0, y0, x1, y1, h, w lookups) and be a multiple of ``num_attention_heads``.
    """

    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    coordinate_size: int = 128
    shape_size: int = 128
    max_position_embeddings: int = 514

    def __post_init__(self) -> None:
        if self.hidden_size != 4 * self.coordinate_size + 2 * self.shape_size:
            raise ValueError(
                f"hidden_size={self.hidden_size} must equal 4*coordinate_size + 2*shape_size = "
                f"4*{self.coordinate_size} + 2*{self.shape_size} = {4 * self.coordinate_size + 2 * self.shape_size}")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"hidden_size={self.hidden_size} is not a multiple of "
                             f"num_attention_heads={self.num_attention_heads}")
        for name in ("num_hidden_layers", "intermediate_size", "max_position_embeddings"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be positive")
