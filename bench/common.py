"""Shared helpers of the benchmarks: machine description, markdown tables, timing and peak-memory sampling.

Benchmarks are not tests: they measure and print, and never assert anything about speed.
"""

from __future__ import annotations

import csv
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

__all__ = ["ROOT", "XFUND_IMAGES", "prepare_kie", "page_files", "small_pages", "write_manifest", "cpu_model",
           "gpu_info", "machine_info", "machine_header", "markdown_table", "timed", "PeakRss", "tree_rss", "fmt_s",
           "fmt_ratio", "command_line", "xfund_labels", "page_quality", "accuracy_guard", "GUARD_OCR_CHAR_PCT",
           "GUARD_HMEAN_POINTS"]

ROOT = Path(__file__).resolve().parent.parent
XFUND_IMAGES = ROOT.parent / "shared" / "data" / "xfund_zh_train" / "image"


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), or the platform's processor string."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def gpu_info() -> str:
    """The GPUs ``nvidia-smi`` reports (name, memory), or ``"none"``."""
    if shutil.which("nvidia-smi") is None:
        return "none"
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "none (nvidia-smi failed)"
    return "; ".join(line.strip() for line in out.splitlines() if line.strip()) or "none"


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for module, name in (("paddle", "paddlepaddle"), ("apache_beam", "apache-beam"), ("numpy", "numpy"),
                         ("pyarrow", "pyarrow"), ("cv2", "opencv"), ("paddlenlp", "paddlenlp"),
                         ("openvino", "openvino")):
        try:
            out[name] = __import__(module).__version__
        except Exception:  # noqa: BLE001 - a version line must never stop a benchmark
            out[name] = "n/a"
    return out


def machine_info() -> dict[str, object]:
    """CPU, cores, memory, GPU, the CPU's speed-relevant ISA flags, library versions and the current load average.

    Returns:
        A JSON-ready dict.
    """
    import psutil

    from models.capabilities import detect_capabilities

    caps = detect_capabilities()
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 0
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "usable_cores": usable,
            "memory_gib": round(psutil.virtual_memory().total / 2**30, 1), "gpu": gpu_info(),
            "isa": caps.isa(), "bf16": caps.bf16, "tensorrt": caps.tensorrt or caps.why_no_tensorrt,
            "os": f"{platform.system()} {platform.release()}", "versions": _versions(),
            "loadavg": tuple(round(x, 2) for x in os.getloadavg())}


def command_line(argv: Sequence[str] | None = None) -> str:
    """The command that is running, as a user would type it from the checkout."""
    args = list(sys.argv if argv is None else argv)
    script = Path(args[0])
    try:
        script = script.resolve().relative_to(ROOT)
    except ValueError:
        pass
    return shlex.join([".venv/bin/python", str(script), *args[1:]])


def machine_header(info: dict[str, object], command: str, extra: Sequence[str] = ()) -> str:
    """A few markdown lines naming the machine, the versions and the exact command.

    Args:
        info: :func:`machine_info` output.
        command: the command line.
        extra: more lines to append (settings, notes).

    Returns:
        Markdown text.
    """
    versions = ", ".join(f"{k} {v}" for k, v in info["versions"].items())  # type: ignore[union-attr]
    lines = [f"command: `{command}`  ",
             f"machine: {info['cpu']}, {info['cores']} cores ({info['usable_cores']} usable), "
             f"{info['memory_gib']} GiB RAM, GPU: {info['gpu']}, {info['os']}  ",
             f"CPU ISA flags: {info.get('isa', '?')} (native bf16: {'yes' if info.get('bf16') else 'no'}); "
             f"TensorRT: {info.get('tensorrt', '?')}  ",
             f"versions: {versions}  ",
             f"load average at start (1/5/15 min): {' / '.join(str(x) for x in info['loadavg'])}  "]  # type: ignore
    lines += [f"{x}  " for x in extra]
    return "\n".join(lines)


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A markdown table.

    Args:
        headers: column names.
        rows: cells (already formatted, or anything ``str()`` handles).

    Returns:
        The table text.
    """
    out = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(out)


def fmt_s(seconds: float | None, digits: int = 3) -> str:
    """Seconds as text (``-`` for None)."""
    return "-" if seconds is None else f"{seconds:.{digits}f}"


def fmt_ratio(x: float | None) -> str:
    """A ratio as ``1.23x`` (``-`` for None)."""
    return "-" if x is None else f"{x:.2f}x"


@contextmanager
def timed(store: dict[str, float], key: str) -> Iterator[None]:
    """Adds the wall time of the block, in seconds, to ``store[key]``."""
    start = time.perf_counter()
    try:
        yield
    finally:
        store[key] = store.get(key, 0.0) + time.perf_counter() - start


def tree_rss(pid: int) -> int:
    """Resident memory (bytes) of a process and all its descendants (0 if it is gone)."""
    import psutil

    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


class PeakRss:
    """Samples the RSS of a process tree in a background thread and keeps the peak.

    Args:
        pid: the root process (default: this one).
        interval_s: sampling period.
    """

    def __init__(self, pid: int | None = None, interval_s: float = 0.2) -> None:
        self.pid = os.getpid() if pid is None else pid
        self.interval_s = interval_s
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, tree_rss(self.pid))
            self._stop.wait(self.interval_s)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


# --- inputs and models (built once under --work) ---------------------------------------------------------------

def _xfund_texts() -> list[str]:
    texts = []
    for line in (XFUND_IMAGES.parent / "train.json").read_text(encoding="utf-8").splitlines():
        if "\t" in line:
            texts.extend(item["transcription"] for item in json.loads(line.split("\t", 1)[1]))
    return texts


def prepare_kie(work: Path, kind: str) -> tuple[Path, Path]:
    """Exports (once) the SER and RE folders of a KIE model kind and returns them."""
    if kind == "default":
        base = ROOT / "models" / "assets" / "default_kie"
        if not (base / "ser").is_dir():
            raise SystemExit(f"--kie default: {base}/ser does not exist yet; use --kie base or tiny")
        return base / "ser", base / "re"
    if kind not in ("base", "tiny"):
        raise SystemExit(f"unknown --kie '{kind}', expected base, tiny or default")
    root = work / f"kie_{kind}_v2"
    ser, re_dir = root / "ser", root / "re"
    if (ser / "SHA256SUMS").is_file() and (re_dir / "SHA256SUMS").is_file():
        return ser, re_dir
    import paddle

    from models.checkpoint import export_inference
    from models.layoutxlm import LayoutXLMConfig, ReModel, SerModel
    from models.tokenizer import train_tokenizer

    vocab = 8000
    tok = train_tokenizer(_xfund_texts(), root / "tokenizer", vocab_size=vocab)
    if kind == "base":
        cfg = LayoutXLMConfig(vocab_size=vocab + 2)
    else:
        cfg = LayoutXLMConfig(vocab_size=vocab + 2, hidden_size=48, num_hidden_layers=2, num_attention_heads=2,
                              intermediate_size=96, coordinate_size=8, shape_size=8)
    paddle.seed(2022)
    ser_model = SerModel(cfg, num_labels=7)
    if kind == "base":
        # A random 12-layer encoder gives nearly the same vector for every token, and with seed 2022 the
        # classifier then never picks QUESTION, so RE would get no candidate pair. Giving B-/I-QUESTION the
        # classifier rows of B-/I-HEADER makes those lines QUESTION (ties go to the smaller id): ~30% of the
        # lines become questions, ~20% answers, as on real forms, and RE runs on realistic pair counts.
        with paddle.no_grad():
            w, b = ser_model.classifier.weight, ser_model.classifier.bias  # (H, 7), (7,)
            w[:, 1:3] = w[:, 5:7]
            b[1:3] = b[5:7]
    export_inference(ser_model, ser, tokenizer_dir=tok)
    export_inference(ReModel(cfg), re_dir, tokenizer_dir=tok)
    return ser, re_dir


def page_files(n: int) -> list[Path]:
    """The first ``n`` shared XFUND zh pages."""
    files = [XFUND_IMAGES / f"zh_train_{i}.jpg" for i in range(n)]
    missing = [f for f in files if not f.is_file()]
    if missing:
        raise SystemExit(f"shared XFUND pages missing: {missing[:3]} (the benchmark reads ../shared/data)")
    return files


def small_pages(work: Path, factor: int) -> list[Path]:
    """The 40 XFUND pages downscaled ``factor`` times (written once under ``work``)."""
    from PIL import Image

    folder = work / f"small_x{factor}"
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for src in page_files(40):
        dst = folder / src.name
        if not dst.is_file():
            with Image.open(src) as im:
                small = im.convert("RGB").resize((im.width // factor, im.height // factor), Image.BILINEAR)
                small.save(dst, quality=90)
        out.append(dst)
    return out


def write_manifest(path: Path, files: list[Path], n: int) -> Path:
    """A CSV manifest of ``n`` rows cycling over ``files`` under distinct doc ids."""
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["uri", "doc_id"])
        for i in range(n):
            w.writerow([str(files[i % len(files)]), f"doc{i:06d}"])
    return path


# --- the accuracy guard: a faster setting must read the pages as today's does --------------------------------

GUARD_OCR_CHAR_PCT = 0.2  # OCR character accuracy may be at most 0.2 percentage points lower (issue 14)
GUARD_HMEAN_POINTS = 0.5  # SER line / RE pair Hmean at most 0.5 points lower


def xfund_labels(names: Sequence[str]) -> dict[str, list[dict]]:
    """The XFUND zh train labels (``transcription``, ``label``, ``points``, ``id``, ``linking``) of some pages."""
    want, out = set(names), {}
    for line in (XFUND_IMAGES.parent / "train.json").read_text(encoding="utf-8").splitlines():
        name, _, payload = line.partition("\t")
        stem = name.rsplit(".", 1)[0]
        if stem in want:
            out[stem] = json.loads(payload)
    return out


def page_quality(pages: Sequence[dict], labels: dict[str, list[dict]]) -> dict[str, float]:
    """OCR character accuracy, SER line Hmean and RE pair Hmean of predicted pages against XFUND labels.

    Each gold entity is matched to at most one OCR line (greedy by IoU >= 0.5, as ``tests/models/test_ocr_xfund.py``).
    OCR: 1 - edits / characters over matched lines, NFKC on both sides. SER: micro Hmean of the QUESTION, ANSWER
    and HEADER labels of matched lines. RE: Hmean of predicted (question line, answer line) pairs against the gold
    links between matched lines.

    Args:
        pages: ``{"name", "lines": [[text, [x0, y0, x1, y1], label], ...], "pairs": [[q_line, a_line], ...]}``.
        labels: :func:`xfund_labels`.

    Returns:
        ``{"char_acc", "ser_hmean", "re_hmean", "gold_lines"}`` (fractions, 0-1).
    """
    import unicodedata

    from training.metrics import box_iou, edit_distance

    chars = edits = gold_n = 0
    ser_tp = ser_pred = ser_gold = re_tp = re_pred = re_gold = 0
    for page in pages:
        gold = [g for g in labels.get(page["name"], []) if g["transcription"].strip()]
        boxes = [(min(p[0] for p in g["points"]), min(p[1] for p in g["points"]), max(p[0] for p in g["points"]),
                  max(p[1] for p in g["points"])) for g in gold]
        lines = page["lines"]
        ranked = sorted(((box_iou(b, ln[1]), gi, li) for gi, b in enumerate(boxes) for li, ln in enumerate(lines)),
                        reverse=True)
        line_of: dict[int, int] = {}  # gold index -> line index
        used: set[int] = set()
        for iou, gi, li in ranked:
            if iou < 0.5:
                break
            if gi not in line_of and li not in used:
                line_of[gi] = li
                used.add(li)
        gold_n += len(gold)
        for gi, li in line_of.items():
            want = unicodedata.normalize("NFKC", gold[gi]["transcription"])
            chars += len(want)
            edits += min(len(want), edit_distance(unicodedata.normalize("NFKC", lines[li][0]), want))
        gold_label = {li: gold[gi]["label"].upper() for gi, li in line_of.items()}
        for li, ln in enumerate(lines):
            pred, want = (ln[2] or "O").upper(), gold_label.get(li, "OTHER")
            ser_pred += pred not in ("O", "OTHER")
            ser_tp += pred not in ("O", "OTHER") and pred == want
        ser_gold += sum(g["label"].upper() not in ("O", "OTHER") for g in gold)
        label_of = {g["id"]: g["label"] for g in gold}
        links = {(q, a) for g in gold for q, a in g.get("linking", [])
                 if label_of.get(q) == "question" and label_of.get(a) == "answer"}
        id_line = {gold[gi]["id"]: li for gi, li in line_of.items()}
        found = {(id_line[q], id_line[a]) for q, a in links if q in id_line and a in id_line}
        pred_pairs = {tuple(p) for p in page["pairs"]}
        re_gold += len(links)  # links whose lines OCR missed count as missed pairs
        re_pred += len(pred_pairs)
        re_tp += len(pred_pairs & found)

    def hmean(tp: int, pred: int, gold: int) -> float:
        return 2 * tp / (pred + gold) if pred + gold else 0.0

    return {"char_acc": 1 - edits / chars if chars else 0.0, "ser_hmean": hmean(ser_tp, ser_pred, ser_gold),
            "re_hmean": hmean(re_tp, re_pred, re_gold), "gold_lines": gold_n}


def accuracy_guard(base: dict[str, float], other: dict[str, float]) -> tuple[bool, str]:
    """Whether a setting keeps today's accuracy: OCR char accuracy within 0.2 points, SER/RE Hmean within 0.5.

    Args:
        base / other: :func:`page_quality` of today's settings and of the setting.

    Returns:
        ``(holds, text)``, the text giving each difference in percentage points.
    """
    d_char = (other["char_acc"] - base["char_acc"]) * 100
    d_ser = (other["ser_hmean"] - base["ser_hmean"]) * 100
    d_re = (other["re_hmean"] - base["re_hmean"]) * 100
    holds = d_char >= -GUARD_OCR_CHAR_PCT and d_ser >= -GUARD_HMEAN_POINTS and d_re >= -GUARD_HMEAN_POINTS
    return holds, f"char {d_char:+.2f}, SER {d_ser:+.2f}, RE {d_re:+.2f}"
