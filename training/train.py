"""Fine-tune VI-LayoutXLM SER or RE (optionally with UDML) from a shard manifest. Reads top to bottom.

    kiebeam train --preset tiny_ser --manifest data/manifest.json --out_dir runs/ser

Run folder: ``metrics.jsonl`` (one JSON object per logged step / evaluation), ``skipped.txt`` (documents and
lines left out of the shards, with line numbers), ``loss.png`` / ``hmean.png``, ``tokenizer/`` (from-scratch
runs), ``best/`` (the best student by eval Hmean), ``step_N/`` (every ``save_every`` steps) and ``latest/``
(everything needed to resume: weights of both UDML models, optimizer state, step, RNG state).

Multi-GPU (data parallel; each process reads every shard and takes its share of each epoch's batches through
``paddle.io.DistributedBatchSampler``; rank 0 evaluates and writes)::

    PYTHONPATH=. python -m paddle.distributed.launch --gpus 0,1,2,3 training/launch.py --preset ser_vi_layoutxlm \
        --manifest gs://bucket/kie/manifest.json --init_from pretrained/ser_vi_layoutxlm --out_dir runs/ser

(``training/launch.py`` takes ``kiebeam train``'s flags). On CPU, ``--nproc_per_node 2`` instead of ``--gpus`` runs
two processes over gloo (``tests/training/test_data_parallel.py``). The pooler and the unused visual embeddings get
no gradient, so ``paddle.DataParallel`` runs with ``find_unused_parameters=True``. Console progress lines come from
``training.progress`` (rank 0).
"""

from __future__ import annotations

import dataclasses
import json
import math
import pickle
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import paddle
from paddle.io import DistributedBatchSampler

from models.capabilities import use_fast_mkl
from models.features import MODEL_INPUTS, RE_INPUTS, bio_labels
from models.layoutxlm import LayoutXLMConfig, ReModel, SerModel
from models.tokenizer import load_tokenizer, train_tokenizer
from training.augment import Augment, answer_pool, augment_window
from training.config import TrainConfig, lr_at
from training.data import (
    Example,
    LengthBucketSampler,
    document_texts,
    encode_documents,
    re_batch,
    ser_batch,
    split_images,
)
from training.evaluate import evaluate_re, evaluate_ser
from training.losses import udml_total
from training.progress import ScalarLog, TrainProgress
from training.shards import check_skipped, load_manifest, load_split
from training.store import (
    load_init,
    load_optimizer_state,
    load_resume_folder,
    optimizer_state,
    plot_metrics,
    save_model,
    seal_resume_folder,
)

__all__ = ["main"]


class _TensorOutputs(paddle.nn.Layer):
    """A model as ``paddle.DataParallel`` needs it: the output object plus its tensors in a list.

    DataParallel starts its walk of the backward graph from the output tensors it finds, and it looks only into
    tensors, lists, tuples and dicts. Our models return dataclasses; with no tensor found, every parameter counts
    as unused and the first backward fails ("parameter ... has been ready before").
    """

    def __init__(self, model: paddle.nn.Layer) -> None:
        super().__init__()
        self.model = model

    def forward(self, **inputs: paddle.Tensor) -> tuple[Any, list[Any]]:
        out = self.model(**inputs)
        return out, [getattr(out, f.name) for f in dataclasses.fields(out)]


def main(config: TrainConfig, *, progress_every_s: float = 25.0, progress_every_steps: int = 0,
         visualdl_dir: str | None = None) -> dict[str, Any]:
    """Trains a SER or RE model as ``config`` says.

    Args:
        config: the run configuration (see ``training.config``).
        progress_every_s / progress_every_steps: console step lines (``training.progress``) at most this many
            seconds apart, and every this many steps (0: by time only); ``config.progress`` False: none.
        visualdl_dir: also log the scalars to VisualDL there (rank 0).

    Returns:
        ``{"best_hmean", "best_step", "steps", "out_dir"}``.
    """
    # ---------------------------------------------------------------- setup: processes, seeds, run folder
    use_fast_mkl()  # MKL's AVX2 kernels on AMD CPUs (models.capabilities.mkl_cpu_type): ~3x faster matmuls
    world = paddle.distributed.get_world_size()
    if world > 1:
        paddle.distributed.init_parallel_env()
    rank = paddle.distributed.get_rank()
    random.seed(config.seed)
    np.random.seed(config.seed)
    paddle.seed(config.seed)
    out = Path(config.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ser = config.task == "ser"

    # ---------------------------------------------------------------- data: manifest -> documents -> windows
    manifest = load_manifest(config.manifest)
    train_docs, skipped = load_split(manifest, "train")
    eval_docs, eval_skipped = load_split(manifest, config.eval_split)
    if rank == 0:
        (out / "skipped.txt").write_text("".join(f"{s}\n" for s in skipped + eval_skipped))
    for split, docs, skips in (("train", train_docs, skipped), (config.eval_split, eval_docs, eval_skipped)):
        check_skipped(split, len(docs), skips, config.max_skipped_fraction, str(out / "skipped.txt"), echo=rank == 0)
    if not train_docs:
        raise ValueError(f"manifest {config.manifest} has no readable train documents ({len(skipped)} skipped)")

    # ---------------------------------------------------------------- model(s) and tokenizer
    labels = list(manifest.labels)
    num_labels = len(bio_labels(labels))
    tok_dir = out / "tokenizer"
    if config.init_from:
        tokenizer, tok_dir, model_cfg, state = load_init(config.init_from, config.tokenizer_dir, task=config.task,
                                                          allow_unverified=config.allow_unverified)
    else:
        if rank == 0 and not (tok_dir / "sentencepiece.bpe.model").exists():
            train_tokenizer(document_texts(train_docs), tok_dir, vocab_size=config.vocab_size)
        if world > 1:
            paddle.distributed.barrier()  # the other ranks read the tokenizer that rank 0 wrote
        tokenizer, state = load_tokenizer(tok_dir), None
        model_cfg = LayoutXLMConfig(**config.backbone_args(len(tokenizer)))

    def build() -> paddle.nn.Layer:
        model = SerModel(model_cfg, num_labels) if ser else ReModel(model_cfg)
        if state is not None:
            own = model.state_dict()  # a SER checkpoint may start RE: only keys with matching shapes are used
            model.set_state_dict({k: v for k, v in state.items() if k in own and list(v.shape) == list(own[k].shape)})
        return model

    student = build()
    peer = None
    if config.udml:  # a peer with the same backbone start and its own head (PaddleOCR: same pretrained weights)
        peer = build()
        peer.layoutxlm.set_state_dict(student.layoutxlm.state_dict())
    models = [student] + ([peer] if peer is not None else [])
    train_models = [paddle.DataParallel(_TensorOutputs(m), find_unused_parameters=True) if world > 1 else m
                    for m in models]

    visual = model_cfg.use_visual_backbone  # LayoutXLM with its visual backbone: page images from the shards
    train_ex = encode_documents(train_docs, tokenizer, labels, task=config.task, max_len=config.max_len,
                                images=split_images(manifest, "train", train_docs, required=True) if visual else None)
    eval_ex = encode_documents(eval_docs, tokenizer, labels, task=config.task, max_len=config.max_len,
                               images=split_images(manifest, config.eval_split, eval_docs, required=True)
                               if visual else None)
    if not ser:
        train_ex = [e for e in train_ex if len(e.re.pairs)]  # windows without candidates add no RE loss
    make_batch = ser_batch if ser else re_batch
    aug = Augment(merge=config.augment_merge, split=config.augment_split, rows=config.augment_rows,
                  jitter=config.augment_jitter, drop=config.augment_drop, noise=config.augment_noise,
                  swap=config.augment_swap, empty=config.augment_empty)
    pool = answer_pool(train_docs) if aug.swap > 0 else None
    label2id = {n: i for i, n in enumerate(bio_labels(labels))}

    def train_examples(indices: list[int]) -> list[Example]:
        """The batch's examples, each window rebuilt by ``training.augment`` when augmentation is on."""
        if not aug.active:
            return [train_ex[i] for i in indices]
        rng = np.random.default_rng([config.seed, rank, step])  # per step: a resumed run draws the same
        return [dataclasses.replace(train_ex[i], window=augment_window(
            train_ex[i].window, train_docs[train_ex[i].doc], tokenizer, label2id, rng, aug, max_len=config.max_len,
            pool=pool))
            for i in indices]
    keys = MODEL_INPUTS + (("labels",) if ser else (*RE_INPUTS, "pair_labels")) + (("image",) if visual else ())

    # ---------------------------------------------------------------- optimizer (PaddleOCR: AdamW, no decay)
    params = [p for m in models for p in m.parameters()]
    for m in models:
        for name, p in m.named_parameters():
            if ".rel_pos" in name:  # Paddle's per-parameter multiplier of the optimizer's rate
                p.optimize_attr["learning_rate"] = config.relative_bias_lr_scale
    clip = paddle.nn.ClipGradByNorm(config.clip_norm) if config.clip_norm else None
    optimizer = paddle.optimizer.AdamW(learning_rate=config.learning_rate, parameters=params, beta1=0.9,
                                       beta2=0.999, epsilon=1e-8, weight_decay=config.weight_decay, grad_clip=clip)
    if config.bucket_by_length:  # similar lengths per batch; the token axis is cut to the longest (ser_batch)
        sampler = LengthBucketSampler([e.window.num_tokens for e in train_ex], config.batch_size, seed=config.seed,
                                      rank=rank, world=world)
    else:
        sampler = DistributedBatchSampler(train_ex, batch_size=config.batch_size, shuffle=True, drop_last=False)
    steps_per_epoch = len(sampler)
    total_steps = config.epochs * steps_per_epoch
    if config.max_steps:
        total_steps = min(total_steps, config.max_steps)
    eval_every = config.eval_every or steps_per_epoch

    # ---------------------------------------------------------------- resume
    step, best, best_step = 0, -1.0, -1
    latest = out / "latest"
    if config.resume and (latest / "state.json").exists():
        # verified against its SHA256SUMS and read without pickle's code execution, like every model folder
        run_state, model_states, opt_state, rng_state = load_resume_folder(
            latest, len(models), allow_unverified=config.allow_unverified)
        step, best, best_step = run_state["step"], run_state["best_hmean"], run_state["best_step"]
        for m, model_state in zip(models, model_states):
            m.set_state_dict(model_state)
        load_optimizer_state(optimizer, models, opt_state)
        paddle.set_rng_state(rng_state)
    metrics_file = open(out / "metrics.jsonl", "a" if config.resume else "w") if rank == 0 else None

    def log(record: dict[str, Any]) -> None:
        if rank == 0:
            metrics_file.write(json.dumps(record) + "\n")
            metrics_file.flush()

    def evaluate() -> dict[str, Any]:
        return evaluate_ser(student, eval_ex, labels) if ser else evaluate_re(student, eval_ex)

    def save_resume_state() -> None:
        latest.mkdir(exist_ok=True)
        for i, m in enumerate(models):
            paddle.save(m.state_dict(), str(latest / f"model_{i}.pdparams"))
        paddle.save(optimizer_state(optimizer, models), str(latest / "optimizer.pdopt"))
        (latest / "rng.pkl").write_bytes(pickle.dumps(paddle.get_rng_state()))
        (latest / "state.json").write_text(json.dumps({"step": step, "best_hmean": best, "best_step": best_step,
                                                        "scheduler": {"step": step, "lr": optimizer.get_lr()},
                                                        "config": config.to_dict()}))
        seal_resume_folder(latest, len(models))

    meta = {"manifest": {"uri": config.manifest, **manifest.to_dict()}, "config": config.to_dict(),
            "train_documents": len(train_docs), "eval_documents": len(eval_docs)}

    # ---------------------------------------------------------------- the loop
    for m in train_models:
        m.train()
    progress = TrainProgress(total_steps, steps_per_epoch, config.epochs, start_step=step, every_s=progress_every_s,
                             every_steps=progress_every_steps, enabled=config.progress and rank == 0)
    scalars = ScalarLog(visualdl_dir) if visualdl_dir and rank == 0 else None
    t0 = time.perf_counter()
    while step < total_steps:
        epoch, skip = divmod(step, steps_per_epoch)
        sampler.set_epoch(epoch)  # the shuffle depends on the epoch only, so a resumed run sees the same batches
        for indices in list(sampler)[skip:]:
            if step >= total_steps:
                break
            batch = {k: paddle.to_tensor(v) for k, v in make_batch(train_examples(indices)).items() if k in keys}
            lr = lr_at(step, config, steps_per_epoch)
            optimizer.set_lr(lr)

            # forward -> loss
            outs = [m(**batch)[0] if world > 1 else m(**batch) for m in train_models]
            if peer is None:
                loss, parts = outs[0].loss, {}
            else:
                loss, parts = udml_total(outs[0], outs[1], batch["attention_mask"], layers=config.udml_layers,
                                         dml_weight=config.udml_dml_weight, l2_weight=config.udml_l2_weight, ser=ser)

            # backward -> step
            loss.backward()
            optimizer.step()
            optimizer.clear_grad()
            step += 1

            loss_value = float(loss)
            if not math.isfinite(loss_value):
                raise FloatingPointError(f"loss became {loss_value} at step {step}")
            progress.step(step, loss_value, lr, parts)
            if step % config.log_every == 0:
                log({"step": step, "epoch": epoch, "loss": loss_value, "lr": lr, **parts,
                     "elapsed_s": round(time.perf_counter() - t0, 3)})
                if scalars is not None:
                    scalars.step(step, loss_value, lr, parts)

            # eval every N -> checkpoint when best
            if rank == 0 and eval_ex and (step % eval_every == 0 or step == total_steps):
                t_eval = time.perf_counter()
                metrics = evaluate()
                log({"step": step, "eval": metrics})
                progress.evaluation(step, metrics, best, best_step, time.perf_counter() - t_eval)
                if scalars is not None:
                    scalars.evaluation(step, metrics)
                if metrics["hmean"] > best:
                    best, best_step = metrics["hmean"], step
                    save_model(student, out / "best", task=config.task, tokenizer_dir=tok_dir, labels=labels,
                               metadata={**meta, "step": step, "metrics": metrics}, max_len=config.max_len)
            if rank == 0 and config.save_every and step % config.save_every == 0:
                save_resume_state()
                save_model(student, out / f"step_{step}", task=config.task, tokenizer_dir=tok_dir, labels=labels,
                           metadata={**meta, "step": step})

    # ---------------------------------------------------------------- finish
    if scalars is not None:
        scalars.close()
    if rank == 0:
        save_resume_state()
        if not eval_ex:
            save_model(student, out / "best", task=config.task, tokenizer_dir=tok_dir, labels=labels,
                       metadata={**meta, "step": step})
        plot_metrics(out / "metrics.jsonl", out)
        metrics_file.close()
        progress.summary(step, best, best_step, str(out))
    return {"best_hmean": best, "best_step": best_step, "steps": step, "out_dir": str(out)}
