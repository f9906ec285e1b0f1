"""UDML (unified deep mutual learning) losses, as PaddleOCR's ``*_udml.yml`` configs combine them.

* :func:`dml_loss` -- ``DistillationSERDMLLoss``: symmetric KL between the two models' softmax outputs over the
  active tokens, ``0.5 * (KL(q||p) + KL(p||q))`` with ``+1e-10`` smoothing, mean over active tokens; gradients
  flow into both models.
* :func:`hidden_l2_loss` -- ``DistillationVQADistanceLoss(mode="l2")``: MSE between the outputs of one encoder
  layer over the active text tokens (mean over tokens x hidden).
* :func:`udml_total` -- ``task_S + task_T + w_dml * DML (SER only) + w_l2 * sum_layers MSE``.
"""

from __future__ import annotations

from collections.abc import Sequence

import paddle
import paddle.nn.functional as F

__all__ = ["dml_loss", "hidden_l2_loss", "udml_total"]


def _active(x: paddle.Tensor, mask: paddle.Tensor) -> paddle.Tensor:
    """Rows of ``x (B, L, D)`` where ``mask (B, L)`` is 1, as ``(N, D)``."""
    flat = x.reshape([-1, x.shape[-1]])
    idx = paddle.nonzero(mask.reshape([-1]) == 1).reshape([-1])
    return paddle.gather(flat, idx)


def dml_loss(logits_s: paddle.Tensor, logits_t: paddle.Tensor, mask: paddle.Tensor) -> paddle.Tensor:
    """Symmetric KL between two models' token distributions.

    Args:
        logits_s: student logits ``(B, L, C)``.
        logits_t: teacher (peer) logits ``(B, L, C)``.
        mask: attention mask ``(B, L)``.

    Returns:
        A scalar.
    """
    p = F.softmax(_active(logits_s, mask), axis=-1) + 1e-10
    q = F.softmax(_active(logits_t, mask), axis=-1) + 1e-10
    n = p.shape[0]
    kl_qp = (q * (paddle.log(q + 1e-10) - paddle.log(p))).sum() / n
    kl_pq = (p * (paddle.log(p + 1e-10) - paddle.log(q))).sum() / n
    return 0.5 * (kl_qp + kl_pq)


def hidden_l2_loss(h_s: paddle.Tensor, h_t: paddle.Tensor, mask: paddle.Tensor) -> paddle.Tensor:
    """MSE between two models' hidden states of one layer over active tokens.

    Args:
        h_s: ``(B, L, H)``.
        h_t: ``(B, L, H)``.
        mask: attention mask ``(B, L)``.

    Returns:
        A scalar.
    """
    return F.mse_loss(_active(h_s, mask), _active(h_t, mask))


def udml_total(out_s: object, out_t: object, mask: paddle.Tensor, *, layers: Sequence[int], dml_weight: float,
               l2_weight: float, ser: bool) -> tuple[paddle.Tensor, dict[str, float]]:
    """The combined UDML loss of a student/peer pair.

    Args:
        out_s: student ``SerOutput`` / ``ReOutput`` (with ``loss``).
        out_t: peer output.
        mask: attention mask ``(B, L)``.
        layers: encoder layers (0-based) for the feature loss.
        dml_weight: weight of the symmetric KL (SER only).
        l2_weight: weight of each layer's MSE.
        ser: whether these are SER outputs (adds the DML term).

    Returns:
        ``(total, parts)``; ``parts`` holds floats for logging.
    """
    total = out_s.loss + out_t.loss
    parts = {"loss_student": float(out_s.loss), "loss_peer": float(out_t.loss)}
    if ser and dml_weight:
        dml = dml_loss(out_s.logits, out_t.logits, mask)
        total = total + dml_weight * dml
        parts["loss_dml"] = float(dml)
    for i in layers:
        l2 = hidden_l2_loss(out_s.hidden_states[i], out_t.hidden_states[i], mask)
        total = total + l2_weight * l2
        parts[f"loss_l2_{i}"] = float(l2)
    return total, parts
