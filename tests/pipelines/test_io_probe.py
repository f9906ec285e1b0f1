"""gs:// without network fails in seconds: the launcher lists inputs and writes a probe to the output first.

Real parts: the GCS emulator (tests/gcs_emulator.py) running, stopped, and a closed loopback port for a GCS
endpoint that never answers; the ``kiebeam`` console script in a subprocess for exit codes and the one-line error.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from gcs_emulator import _free_port, gcs_emulator
from gcs_emulator import put as _put
from hostile_corpus import text_page

from pipelines.extract import run
from pipelines.output_reader import list_runs
from transforms.inputs import MatchPatternFn

KIEBEAM = str(Path(sys.executable).parent / "kiebeam")
FAST = ["--ser_model_dir=none", "--runner=FnApiRunner", "--progress_interval_secs=0"]


def _kiebeam(args, env_host, timeout=120):
    env = {**os.environ, "STORAGE_EMULATOR_HOST": env_host}
    t0 = time.monotonic()
    proc = subprocess.run([KIEBEAM, "extract", *args], env=env, capture_output=True, text=True, timeout=timeout)
    return proc, time.monotonic() - t0


def test_unreachable_gcs_fails_in_seconds_with_one_line(tmp_path):
    closed = f"http://127.0.0.1:{_free_port()}"  # nothing listens: every request is refused and retried
    args = ["--input=gs://kiebeam-gone/in/*.png", f"--output={tmp_path / 'out'}", "--run_id=u1",
            "--io_probe_timeout_secs=3", *FAST]
    proc, wall = _kiebeam(args, closed)
    assert proc.returncode == 2, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last == ("kiebeam extract: error: could not list input pattern gs://kiebeam-gone/in/*.png: no answer "
                    "within the --io_probe_timeout_secs bound (no network, no credentials, or the service is "
                    "unreachable)")
    assert wall < 45, wall  # process start-up (imports) + the 3 s bound; the stuck listing does not hold the exit
    assert not (tmp_path / "out").exists() or list_runs(str(tmp_path / "out")) == []


@pytest.fixture
def small_page(tmp_path) -> Path:
    path = tmp_path / "a.png"
    text_page(200, 120, ["Name: Ada"]).save(path)
    return path


def test_a_stopped_emulator_and_a_missing_bucket_are_could_not_list(tmp_path, small_page, monkeypatch):
    with gcs_emulator("kiebeam-probe") as host:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", host)
        _put(small_page, "gs://kiebeam-probe/in/a.png")
        t0 = time.monotonic()
        with pytest.raises(ValueError, match=r"^could not list input pattern gs://kiebeam-nobucket/in/\*\.png: "
                                             r"BeamIOError: .*NotFound"):
            run(["--input=gs://kiebeam-nobucket/in/*.png", f"--output={tmp_path / 'o1'}", *FAST])
        with pytest.raises(ValueError, match=r"^input pattern gs://kiebeam-probe/in/\*\.jpg matched no files "
                                             r"\(pass --allow_empty_inputs to run anyway\)$"):
            run(["--input=gs://kiebeam-probe/in/*.jpg", f"--output={tmp_path / 'o2'}", *FAST])
        with pytest.raises(ValueError, match=r"^could not write to output gs://kiebeam-nobucket/out: "):
            run(["--input=gs://kiebeam-probe/in/*.png", "--output=gs://kiebeam-nobucket/out", *FAST])
        assert time.monotonic() - t0 < 20  # all three refused on the launcher, no OCR ran
        with pytest.raises(OSError, match="could not list input pattern gs://kiebeam-nobucket/in/"):
            list(MatchPatternFn().process("gs://kiebeam-nobucket/in/*.png"))  # on a worker: fails, is not "empty"
    # the emulator is stopped now: the same bucket cannot be listed at all
    t0 = time.monotonic()
    with pytest.raises(ValueError, match=r"^could not list input pattern gs://kiebeam-probe/in/\*\.png: no answer"):
        run(["--input=gs://kiebeam-probe/in/*.png", f"--output={tmp_path / 'o3'}", "--io_probe_timeout_secs=2",
             *FAST])
    assert time.monotonic() - t0 < 10
    assert not any((tmp_path / o).exists() for o in ("o1", "o2", "o3"))


def test_an_empty_local_wildcard_exits_2_unless_allowed(tmp_path, small_page):
    empty = tmp_path / "none"
    empty.mkdir()
    with pytest.raises(ValueError, match=f"input pattern {empty}/\\*.png matched no files"):
        run([f"--input={empty}/*.png", f"--output={tmp_path / 'out'}", "--run_id=e1", *FAST])
    assert not (tmp_path / "out").exists()
    with pytest.raises(ValueError, match="manifest .*missing.txt does not exist"):
        run([f"--manifest={tmp_path / 'missing.txt'}", f"--output={tmp_path / 'out'}", *FAST])
    # explicit: an empty input is a (published, empty) run; a literal path always counts as an input
    result = run([f"--input={empty}/*.png", f"--input={small_page}", f"--output={tmp_path / 'out'}", "--run_id=e1",
                  "--allow_empty_inputs", *FAST])
    assert result.state == "DONE" and list_runs(str(tmp_path / "out")) == ["e1"]
    assert not (tmp_path / "out" / "_staging").exists()
