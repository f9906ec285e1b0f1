"""SER training step time with and without MKL's AVX2 kernels on this CPU (``models.capabilities.mkl_cpu_type``).

Paddle's dynamic-graph matmuls call MKL, which takes a generic code path on CPUs that are not Intel's; the training
entry points set ``MKL_DEBUG_CPU_TYPE=5`` on AMD CPUs with AVX2. Each setting runs in fresh child processes, the
settings alternating between rounds; a child builds a SER model of the session-12 bundled size (hidden 384, 4
layers, 12 heads, FFN 1536; ``--hidden``/``--layers`` change it), trains on random 512-token windows in batches of 8
with AdamW, and reports the median of the timed steps after two warm-up steps.

    .venv/bin/python bench/bench_train_step.py --steps 5 --rounds 2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import command_line, fmt_ratio, fmt_s, machine_header, machine_info, markdown_table  # noqa: E402

SETTINGS = {"unset": None, "MKL_DEBUG_CPU_TYPE=5": "5"}


def child(args: argparse.Namespace) -> dict:
    """Times training steps in this process (the environment is the parent's choice)."""
    import numpy as np
    import paddle

    from models.layoutxlm import LayoutXLMConfig, SerModel

    cfg = LayoutXLMConfig(vocab_size=24276, hidden_size=args.hidden, num_hidden_layers=args.layers,
                          num_attention_heads=args.hidden // 32, intermediate_size=4 * args.hidden,
                          coordinate_size=args.hidden // 6, shape_size=(args.hidden - 4 * (args.hidden // 6)) // 2)
    paddle.seed(0)
    model = SerModel(cfg, 7)
    opt = paddle.optimizer.AdamW(1e-4, parameters=model.parameters())
    rng = np.random.default_rng(0)
    b, t = args.batch, args.length
    x0 = np.sort(rng.integers(0, 900, (b, t, 2)), -1)
    bbox = np.stack([x0[..., 0], x0[..., 0], x0[..., 1] + 50, x0[..., 0] + 20], -1)
    inputs = [paddle.to_tensor(rng.integers(4, cfg.vocab_size, (b, t))), paddle.to_tensor(bbox),
              paddle.to_tensor(np.ones((b, t), np.int64)), paddle.to_tensor(np.zeros((b, t), np.int64)),
              paddle.to_tensor(rng.integers(0, 7, (b, t)))]
    times = []
    for i in range(args.steps + 2):
        start = time.perf_counter()
        loss = model(*inputs).loss
        loss.backward()
        opt.step()
        opt.clear_grad()
        if i >= 2:
            times.append(time.perf_counter() - start)
    return {"median_s": statistics.median(times), "steps": times}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--hidden", type=int, default=384)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--length", type=int, default=512)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(child(args)))
        return
    runs: dict[str, list[float]] = {name: [] for name in SETTINGS}
    for _ in range(args.rounds):
        for name, value in SETTINGS.items():
            env = {k: v for k, v in os.environ.items() if k != "MKL_DEBUG_CPU_TYPE"}  # unset: MKL's own choice
            if value:
                env["MKL_DEBUG_CPU_TYPE"] = value
            out = subprocess.run([sys.executable, __file__, "--child", *(argv or sys.argv[1:])], env=env,
                                 capture_output=True, text=True, check=True).stdout
            runs[name].append(json.loads(out.strip().splitlines()[-1])["median_s"])
    base = statistics.median(runs["unset"])
    rows = [(name, fmt_s(statistics.median(v)), fmt_ratio(base / statistics.median(v)),
             " ".join(fmt_s(x, 2) for x in v)) for name, v in runs.items()]
    print(machine_header(machine_info(), command_line(),
                         [f"SER hidden {args.hidden}, {args.layers} layers, batch {args.batch} x {args.length} tokens, "
                          f"AdamW; median of {args.steps} steps per child, {args.rounds} children per setting"]))
    print(markdown_table(["MKL", "s/step", "vs unset", "children (s/step)"], rows))


if __name__ == "__main__":
    main()
