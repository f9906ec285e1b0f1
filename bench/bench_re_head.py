"""The geometric RE head's cost per training step and per inference call: each entity represented once, then
gathered per pair (``models.layoutxlm.GeoREDecoder``), against the earlier formulation that represented both ends
of every pair from scratch (kept here as :func:`per_pair_logits`, on the same weights).

Random encoder states of the bundled model's width (hidden 384), windows of 512 tokens with ``--entities`` entities
and ``--pairs`` candidate pairs each (a full XFUND page window: ~60 entities, several hundred pairs), batches of 4 as
``default_re_head`` trains. Both formulations run alternately in one process; the table gives the median of
``--steps`` timed calls after two warm-up calls, and the largest logit difference between the two (eval mode).

    .venv/bin/python bench/bench_re_head.py --steps 10
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import command_line, fmt_ratio, fmt_s, machine_header, machine_info, markdown_table  # noqa: E402


def per_pair_logits(decoder, seq, entities, pairs, pair_features):  # noqa: ANN001, ANN201
    """The earlier ``GeoREDecoder.forward``: both ends of every pair represented (and projected) per pair."""
    import paddle

    hidden = seq.shape[-1]
    ent, prs = entities.clip(min=0), pairs.clip(min=0)
    cs = paddle.concat([paddle.zeros_like(seq[:, :1]), paddle.cumsum(seq, axis=1)], axis=1)

    def represent(side: int) -> paddle.Tensor:
        idx = prs[:, :, side]
        start = paddle.take_along_axis(ent[:, :, 0], idx, axis=1)
        end = paddle.maximum(paddle.take_along_axis(ent[:, :, 1], idx, axis=1), start + 1)
        label = paddle.take_along_axis(ent[:, :, 2], idx, axis=1)
        first = paddle.take_along_axis(seq, start.unsqueeze(-1), axis=1)
        mean = ((paddle.take_along_axis(cs, end.unsqueeze(-1), axis=1)
                 - paddle.take_along_axis(cs, start.unsqueeze(-1), axis=1))
                / (end - start).astype(seq.dtype).unsqueeze(-1))
        return paddle.concat([first, mean, decoder.entity_emb(label)], axis=-1).reshape([-1, 3 * hidden])

    heads, tails = decoder.ffnn_head(represent(0)), decoder.ffnn_tail(represent(1))
    geo = decoder.geo(pair_features.reshape([-1, pair_features.shape[-1]]))
    logits = decoder.rel_classifier(heads, tails) + decoder.pair_mlp(paddle.concat([heads, tails, geo], axis=-1))
    return logits.reshape([seq.shape[0], -1, 2])


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--entities", type=int, default=60)
    p.add_argument("--pairs", type=int, default=600)
    args = p.parse_args(argv)

    import numpy as np
    import paddle

    from models.capabilities import use_fast_mkl
    from models.features import PAIR_FEATURES
    from models.layoutxlm import LayoutXLMConfig, ReHeadModel, _pair_loss

    use_fast_mkl()
    cfg = LayoutXLMConfig(vocab_size=400, hidden_size=384, num_hidden_layers=1, num_attention_heads=12,
                          intermediate_size=1536, coordinate_size=64, shape_size=64)
    rng = np.random.default_rng(0)
    b, t, e, n = args.batch, 512, args.entities, args.pairs
    starts = np.sort(rng.integers(0, t - 8, size=(b, e)), axis=1)
    inputs = [paddle.to_tensor(rng.normal(size=(b, t, 384)).astype(np.float32)),
              paddle.to_tensor(np.stack([starts, starts + rng.integers(1, 8, size=(b, e)),
                                         rng.integers(0, 3, size=(b, e))], -1).astype(np.int64)),
              paddle.to_tensor(rng.integers(0, e, size=(b, n, 2)).astype(np.int64)),
              paddle.to_tensor(rng.normal(size=(b, n, len(PAIR_FEATURES))).astype(np.float32))]
    labels = paddle.to_tensor(rng.integers(0, 2, size=(b, n)).astype(np.int64))
    paddle.seed(0)
    head = ReHeadModel(cfg, len(PAIR_FEATURES))
    optimizer = paddle.optimizer.AdamW(learning_rate=1e-6, parameters=head.parameters())
    ways = {"per pair (before)": lambda: per_pair_logits(head.extractor, *inputs),
            "per entity (now)": lambda: head.extractor(*inputs)}

    def train_step(logits_of) -> None:  # noqa: ANN001
        _pair_loss(logits_of(), inputs[2], labels).backward()
        optimizer.step()
        optimizer.clear_grad()

    def infer(logits_of) -> None:  # noqa: ANN001
        with paddle.no_grad():
            logits_of().numpy()

    times: dict[tuple[str, str], list[float]] = {}
    for kind, call in (("train step", train_step), ("inference", infer)):
        head.train() if kind == "train step" else head.eval()
        for k in range(args.steps + 2):
            for name, logits_of in ways.items():
                t0 = time.perf_counter()
                call(logits_of)
                if k >= 2:
                    times.setdefault((kind, name), []).append(time.perf_counter() - t0)
    head.eval()
    with paddle.no_grad():
        diff = float(np.abs(ways["per pair (before)"]().numpy() - ways["per entity (now)"]().numpy()).max())
    rows = []
    for kind in ("train step", "inference"):
        base = statistics.median(times[(kind, "per pair (before)")])
        for name in ways:
            med = statistics.median(times[(kind, name)])
            rows.append((kind, name, fmt_s(med), fmt_ratio(base / med)))
    print(machine_header(machine_info(), command_line(),
                         [f"RE head, hidden 384, batch {b} x {t} tokens, {e} entities and {n} pairs per window; "
                          f"median of {args.steps} calls; largest logit difference {diff:.1e}"]))
    print(markdown_table(["call", "formulation", "s", "speed-up"], rows))


if __name__ == "__main__":
    main()
