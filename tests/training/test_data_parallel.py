"""The data-parallel path for real: two CPU processes (gloo) under ``paddle.distributed.launch``.

Both runs start from one saved tiny SER checkpoint, so the reference is exact: one process that takes, at every
step, rank 0's and rank 1's batches (rebuilt with the same ``DistributedBatchSampler``) and averages their losses,
which is what averaging the two ranks' gradients amounts to.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import paddle
import pytest
from paddle.io import DistributedBatchSampler

from models.checkpoint import load_checkpoint
from models.layoutxlm import LayoutXLMConfig, SerModel
from models.tokenizer import load_tokenizer, train_tokenizer
from schemas.annotations import KieDocument, KieLine
from training.config import get_preset, lr_at
from training.data import encode_documents, ser_batch
from training.shards import build_manifest, load_manifest, load_split, shard_entry, write_shard
from training.store import save_model

ROOT = Path(__file__).resolve().parents[2]
LABELS = ["OTHER", "QUESTION", "ANSWER", "HEADER"]
WORDS = ["Name", "Date", "Total", "Address", "Phone", "Invoice", "Amount", "City", "Signature", "Number"]
BATCH, FIRST, SECOND = 2, 3, 5  # batch per rank; steps of the first launch; steps after --resume


def _documents(n: int) -> list[KieDocument]:
    rng = np.random.default_rng(7)
    docs = []
    for d in range(n):
        lines = []
        for i in range(3 + d % 4):
            label = ["HEADER", "QUESTION", "ANSWER", "OTHER"][(i + d) % 4]
            text = " ".join(rng.choice(WORDS, size=1 + (i + d) % 3))
            y = 20 + 40 * i
            box = (20, y, 300, y + 25)
            lines.append(KieLine(text, label, ((20.0, y), (300.0, y), (300.0, y + 25.0), (20.0, y + 25.0)), box, i))
        docs.append(KieDocument(f"doc{d}.jpg", tuple(lines), 400, 400))
    return docs


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A 7-document manifest and a saved tiny SER checkpoint both runs start from."""
    root = tmp_path_factory.mktemp("dp")
    docs = _documents(7)
    shard, sizes = str(root / "s.txt"), str(root / "s.txt.sizes.json")
    write_shard(docs, shard, sizes_uri=sizes)
    entries = [shard_entry(shard, split, sizes_uri=sizes) for split in ("train", "val")]
    (root / "m.json").write_text(build_manifest(entries, LABELS).to_json())
    tok_dir = train_tokenizer([ln.text for d in docs for ln in d.lines] * 5, root / "tok", vocab_size=60)
    paddle.seed(3)
    model = SerModel(LayoutXLMConfig(vocab_size=len(load_tokenizer(tok_dir)), hidden_size=48, num_hidden_layers=1,
                                     num_attention_heads=2, intermediate_size=96, coordinate_size=8, shape_size=8,
                                     hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0), 7)
    save_model(model, root / "init", task="ser", tokenizer_dir=tok_dir, labels=LABELS, metadata={}, max_len=256)
    return root


def _launch(root: Path, out: Path, logs: Path, max_steps: int, *extra: str) -> None:
    cmd = [sys.executable, "-m", "paddle.distributed.launch", "--nproc_per_node", "2", "--log_dir", str(logs),
           "training/launch.py", "--preset", "tiny_ser", "--manifest", str(root / "m.json"), "--out_dir", str(out),
           "--init_from", str(root / "init"), "--batch_size", str(BATCH), "--max_steps", str(max_steps),
           "--eval_every", "2", "--progress_every_s", "0", *extra]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    run = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    worker_logs = "".join(p.read_text(errors="replace")[-3000:] for p in sorted(logs.glob("workerlog.*")))
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:] + worker_logs


def _reference(root: Path, steps: int, ranks: tuple[int, ...]) -> list[dict[str, np.ndarray]]:
    """One process: per step, the mean of the losses on the batches ``ranks`` take; weights after every step."""
    ck = load_checkpoint(root / "init")
    model, cfg = ck.model, get_preset("tiny_ser", batch_size=BATCH)
    model.train()
    docs, _ = load_split(load_manifest(str(root / "m.json")), "train")
    examples = encode_documents(docs, load_tokenizer(ck.tokenizer_dir), LABELS, max_len=cfg.max_len)
    samplers = [DistributedBatchSampler(examples, batch_size=BATCH, shuffle=True, num_replicas=2, rank=r)
                for r in (0, 1)]
    per_epoch = len(samplers[0])
    opt = paddle.optimizer.AdamW(learning_rate=cfg.learning_rate, parameters=model.parameters(), beta1=0.9,
                                 beta2=0.999, epsilon=1e-8, weight_decay=cfg.weight_decay)
    seen, weights = [], []
    for step in range(steps):
        epoch, skip = divmod(step, per_epoch)
        batches = []
        for s in samplers:
            s.set_epoch(epoch)
            batches.append(list(s)[skip])
        seen.append(batches)
        opt.set_lr(lr_at(step, cfg, per_epoch))
        losses = [model(**{k: paddle.to_tensor(v) for k, v in ser_batch([examples[i] for i in batches[r]]).items()}
                        ).loss for r in ranks]
        (sum(losses) / len(losses)).backward()
        opt.step()
        opt.clear_grad()
        weights.append({k: v.numpy().copy() for k, v in model.state_dict().items()})
    assert all(set(b0).isdisjoint(b1) for b0, b1 in seen[:per_epoch]), seen  # the ranks take different documents
    return weights


def _max_diff(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> float:
    assert set(a) == set(b)
    return max(float(np.abs(a[k] - b[k]).max()) for k in a)


def test_two_cpu_processes_average_gradients_write_once_and_resume(setup, tmp_path):
    root, out = setup, tmp_path / "run"
    _launch(root, out, tmp_path / "log1", FIRST)
    averaged = _reference(root, SECOND, ranks=(0, 1))
    rank0_only = _reference(root, FIRST, ranks=(0,))

    trained = {k: v.numpy() for k, v in paddle.load(str(out / "latest" / "model_0.pdparams")).items()}
    assert _max_diff(trained, averaged[FIRST - 1]) < 1e-5
    assert _max_diff(trained, rank0_only[FIRST - 1]) > 1e-3  # rank 1's batches really took part

    # rank 0 alone writes: one metrics record per step, progress lines only in rank 0's log
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == list(range(1, FIRST + 1))
    assert [r["step"] for r in rows if "eval" in r] == [2, 3]
    log0, log1 = ((tmp_path / "log1" / f"workerlog.{r}").read_text(errors="replace") for r in (0, 1))
    assert "kiebeam train: step 3/3" in log0 and "kiebeam eval: step 2" in log0 and "kiebeam train:" not in log1

    # --resume with two processes continues exactly where the first launch stopped
    _launch(root, out, tmp_path / "log2", SECOND, "--resume")
    resumed = {k: v.numpy() for k, v in paddle.load(str(out / "latest" / "model_0.pdparams")).items()}
    assert _max_diff(resumed, averaged[SECOND - 1]) < 1e-5
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == list(range(1, SECOND + 1))
    assert json.loads((out / "latest" / "state.json").read_text())["step"] == SECOND
