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
           "fmt_ratio", "command_line"]

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
                         ("pyarrow", "pyarrow"), ("cv2", "opencv"), ("paddlenlp", "paddlenlp")):
        try:
            out[name] = __import__(module).__version__
        except Exception:  # noqa: BLE001 - a version line must never stop a benchmark
            out[name] = "n/a"
    return out


def machine_info() -> dict[str, object]:
    """CPU, cores, memory, GPU, library versions and the current load average.

    Returns:
        A JSON-ready dict.
    """
    import psutil

    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 0
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "usable_cores": usable,
            "memory_gib": round(psutil.virtual_memory().total / 2**30, 1), "gpu": gpu_info(),
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
