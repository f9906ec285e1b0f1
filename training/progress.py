"""Console progress for training: step lines, evaluation lines and a closing summary table.

The same kind of line as the extraction's ``kiebeam progress`` (``transforms.progress``), printed by rank 0 at
most every ``every_s`` seconds (and every ``every_steps`` steps when set, on the first and on the last step)::

    kiebeam train: step 120/4000 (3.0%), epoch 2/200, loss 0.4312 (student 0.2110, peer 0.2031, dml 0.0105,
        l2_0 0.0031, l2_1 0.0035), lr 4.90e-05, 1.93 steps/s, ETA 33m29s
    kiebeam eval: step 200, hmean 0.8123 (P 0.8012, R 0.8237), new best (was 0.7900 at step 100)

The machine-readable record stays ``metrics.jsonl``; these lines are for people. :class:`ScalarLog` writes the
same scalars to VisualDL (PaddleOCR's own logger, ``--visualdl_dir``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["format_eta", "format_step", "format_eval", "format_summary", "TrainProgress", "ScalarLog"]


def format_eta(seconds: float) -> str:
    """``1h02m`` from an hour up, ``4m07s`` below.

    >>> format_eta(3725), format_eta(247.4)
    ('1h02m', '4m07s')
    """
    s = int(round(max(seconds, 0.0)))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def _term_name(key: str) -> str:
    return key.removeprefix("loss_")


def format_step(step: int, total: int, epoch: int, epochs: int, loss: float, lr: float, parts: Mapping[str, float],
                steps_per_s: float) -> str:
    """One step line (without the ``kiebeam train:`` prefix).

    Args:
        step: optimizer steps done; ``total``: steps of the whole run.
        epoch: 1-based epoch of that step; ``epochs``: epochs of the run.
        loss: the step's loss; ``parts``: its UDML terms (``loss_student`` ...), empty without UDML.
        lr: the step's learning rate.
        steps_per_s: the rate so far in this process (0: no ETA yet).

    Returns:
        ``"step S/T (P%), epoch E/N, loss L (terms), lr R, X steps/s, ETA ..."``.

    >>> format_step(30, 90, 1, 3, 0.5, 1e-3, {}, 0.5)
    'step 30/90 (33.3%), epoch 1/3, loss 0.5000, lr 1.00e-03, 0.50 steps/s, ETA 2m00s'
    """
    terms = ", ".join(f"{_term_name(k)} {v:.4f}" for k, v in parts.items())
    remaining = max(total - step, 0)
    eta = format_eta(remaining / steps_per_s) if steps_per_s > 0 and remaining else ("0s" if not remaining else "-")
    pct = 100.0 * step / total if total else 100.0
    return (f"step {step}/{total} ({pct:.1f}%), epoch {epoch}/{epochs}, loss {loss:.4f}"
            f"{f' ({terms})' if terms else ''}, lr {lr:.2e}, {steps_per_s:.2f} steps/s, ETA {eta}")


def format_eval(step: int, metrics: Mapping[str, Any], best_before: float, best_step_before: int,
                seconds: float) -> str:
    """One evaluation line: Hmean, precision, recall, and whether it is the new best.

    >>> format_eval(200, {"hmean": 0.8, "precision": 0.75, "recall": 0.857}, 0.7, 100, 3.2)
    'step 200, hmean 0.8000 (P 0.7500, R 0.8570), new best (was 0.7000 at step 100), 3.2 s'
    >>> format_eval(300, {"hmean": 0.6, "precision": 0.6, "recall": 0.6}, 0.8, 200, 3.0)
    'step 300, hmean 0.6000 (P 0.6000, R 0.6000), best stays 0.8000 at step 200, 3.0 s'
    """
    h = float(metrics["hmean"])
    head = f"step {step}, hmean {h:.4f} (P {float(metrics['precision']):.4f}, R {float(metrics['recall']):.4f})"
    if h > best_before:
        verdict = "new best" + (f" (was {best_before:.4f} at step {best_step_before})" if best_step_before >= 0 else "")
    else:
        verdict = f"best stays {best_before:.4f} at step {best_step_before}"
    return f"{head}, {verdict}, {seconds:.1f} s"


def format_summary(evals: list[dict[str, Any]], *, steps: int, seconds: float, best_hmean: float, best_step: int,
                   out_dir: str, last_loss: float | None, max_rows: int = 12) -> str:
    """The closing table: every evaluation (the best marked; at most ``max_rows``, best and latest kept), then totals.

    Args:
        evals: ``{"step", "hmean", "precision", "recall"}`` per evaluation, in order.
        steps / seconds: steps done and wall time in this process.
        best_hmean / best_step: the run's best (-1 when nothing was evaluated).
        out_dir: the run folder.
        last_loss: the last step's loss (None if no step ran).
        max_rows: evaluation rows shown.

    Returns:
        A multi-line plain-text table.
    """
    rows = list(evals)
    if len(rows) > max_rows:
        best_row = [r for r in rows if r["step"] == best_step][:1]
        rows = sorted({r["step"]: r for r in best_row + rows[-(max_rows - 1):]}.values(), key=lambda r: r["step"])
    lines = [f"{'step':>8} {'hmean':>8} {'precision':>10} {'recall':>8}"]
    for r in rows:
        mark = "  <- best" if r["step"] == best_step else ""
        lines.append(f"{r['step']:>8d} {r['hmean']:>8.4f} {r['precision']:>10.4f} {r['recall']:>8.4f}{mark}")
    if len(evals) > len(rows):
        lines.append(f"({len(evals) - len(rows)} of {len(evals)} evaluations not shown; all are in metrics.jsonl)")
    rate = f", {steps / seconds:.2f} steps/s" if seconds > 0 else ""
    best = f"{best_hmean:.4f} at step {best_step}" if best_step >= 0 else "none (no evaluation)"
    lines += [f"steps      {steps} in {format_eta(seconds)}{rate}",
              f"last loss  {last_loss:.4f}" if last_loss is not None else "last loss  -",
              f"best hmean {best}",
              f"run folder {out_dir} (best/, latest/, metrics.jsonl)"]
    return "\n".join(lines)


class TrainProgress:
    """Prints step lines when due, every evaluation, and the summary; silent when ``enabled`` is False.

    Args:
        total_steps / steps_per_epoch / epochs: the run's size (for step/total, epoch and ETA).
        start_step: the step this process starts from (``--resume``); the rate counts this process's steps only.
        every_s: seconds between two step lines (0: every step).
        every_steps: also print every this many steps (0: by time only).
        enabled: print at all (rank 0 without ``--quiet``).
        write: where lines go (default ``print(..., flush=True)``).
        clock: seconds, monotonic (tests pass their own).
    """

    def __init__(self, total_steps: int, steps_per_epoch: int, epochs: int, *, start_step: int = 0,
                 every_s: float = 25.0, every_steps: int = 0, enabled: bool = True,
                 write: Callable[[str], None] | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        if every_s < 0 or every_steps < 0:
            raise ValueError(f"every_s={every_s} and every_steps={every_steps} must be >= 0")
        self.total, self.per_epoch, self.epochs = total_steps, max(steps_per_epoch, 1), epochs
        self.every_s, self.every_steps, self.enabled = every_s, every_steps, enabled
        self._write = write or (lambda line: print(line, flush=True))
        self._clock = clock
        self.start_step = start_step
        self.start = self._last = clock()
        self.evals: list[dict[str, Any]] = []
        self.last_loss: float | None = None

    def _emit(self, kind: str, text: str) -> None:
        if self.enabled:
            self._write(f"kiebeam {kind}: {text}")

    def step(self, step: int, loss: float, lr: float, parts: Mapping[str, float] | None = None) -> None:
        """Reports optimizer step ``step`` (1-based count of steps done); prints when a line is due."""
        self.last_loss = loss
        now = self._clock()
        due = (step == self.start_step + 1 or step >= self.total or now - self._last >= self.every_s
               or (self.every_steps and step % self.every_steps == 0))
        if not due:
            return
        self._last = now
        rate = (step - self.start_step) / (now - self.start) if now > self.start else 0.0
        epoch = (step - 1) // self.per_epoch + 1
        self._emit("train", format_step(step, self.total, epoch, self.epochs, loss, lr, parts or {}, rate))

    def evaluation(self, step: int, metrics: Mapping[str, Any], best_before: float, best_step_before: int,
                   seconds: float) -> None:
        """Reports one evaluation (always printed) and keeps it for the summary."""
        self.evals.append({"step": step, **{k: float(metrics[k]) for k in ("hmean", "precision", "recall")}})
        self._emit("eval", format_eval(step, metrics, best_before, best_step_before, seconds))

    def summary(self, steps: int, best_hmean: float, best_step: int, out_dir: str) -> None:
        """Prints the closing table."""
        text = format_summary(self.evals, steps=steps - self.start_step, seconds=self._clock() - self.start,
                              best_hmean=best_hmean, best_step=best_step, out_dir=out_dir, last_loss=self.last_loss)
        self._emit("train", "finished\n" + text)


class ScalarLog:
    """The run's scalars in VisualDL (``train/loss``, ``train/lr``, UDML terms, ``eval/hmean`` ...).

    Args:
        logdir: VisualDL log folder (``visualdl --logdir DIR`` serves it).
    """

    def __init__(self, logdir: str) -> None:
        from visualdl import LogWriter  # a paddlenlp dependency, so always installed with the pinned set

        self._writer = LogWriter(logdir=logdir)

    def step(self, step: int, loss: float, lr: float, parts: Mapping[str, float] | None = None) -> None:
        """Writes one step's loss, learning rate and UDML terms."""
        for tag, value in {"loss": loss, "lr": lr, **(parts or {})}.items():
            self._writer.add_scalar(tag=f"train/{tag}", step=step, value=float(value))

    def evaluation(self, step: int, metrics: Mapping[str, Any]) -> None:
        """Writes one evaluation's Hmean, precision and recall."""
        for k in ("hmean", "precision", "recall"):
            self._writer.add_scalar(tag=f"eval/{k}", step=step, value=float(metrics[k]))

    def close(self) -> None:
        """Flushes and closes the log."""
        self._writer.close()
