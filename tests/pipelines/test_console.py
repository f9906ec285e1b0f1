"""The console of a ``kiebeam`` command: known library notices silenced at their source, failures as one line."""

from __future__ import annotations

import logging
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from pipelines import cli, console

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture()
def configured():
    """``console.configure()`` in this process, undone afterwards (warning filters, Beam's logger level)."""
    beam_log = logging.getLogger("apache_beam.runners.common")
    level = beam_log.level
    with warnings.catch_warnings():
        console.configure()
        yield
    beam_log.setLevel(level)


def _shown(message: str, category: type[Warning], module: str) -> bool:
    with warnings.catch_warnings(record=True) as seen:
        warnings.warn_explicit(message, category, "x.py", 1, module=module)
    return bool(seen)


def test_only_the_known_notices_are_silenced(configured):
    ccache = "No ccache found. Please be aware that recompiling all source files may be required."
    assert not _shown(ccache, UserWarning, "paddle.utils.cpp_extension.extension_utils")
    assert _shown("cannot load the custom op", UserWarning, "paddle.utils.cpp_extension.extension_utils")
    assert _shown(ccache, UserWarning, "models.ocr")  # the same words from elsewhere still show
    assert not _shown("Setuptools is replacing distutils.", UserWarning, "_distutils_hack")
    assert not _shown("`Extra` is deprecated", DeprecationWarning, "paddlenlp.server.http_router.router")
    assert _shown("`x` is deprecated", DeprecationWarning, "paddlenlp.transformers.auto")
    assert not _shown("Polyfit may be poorly conditioned", np.exceptions.RankWarning, "apache_beam.transforms.util")
    assert _shown("Polyfit may be poorly conditioned", np.exceptions.RankWarning, "models.features")
    assert _shown("a real problem", UserWarning, "transforms.decode")


def test_beam_measures_model_memory_again(configured):
    from apache_beam.ml.inference import base

    assert base.resource is not None and base._get_current_process_memory_in_bytes() > 0


def test_a_fresh_command_prints_nothing_but_its_own_lines():
    """The real sources, imported in a fresh interpreter with every warning shown (``-W default``)."""
    code = "\n".join([
        "import warnings",
        "import numpy as np",
        "from pipelines import console",
        "console.configure()",
        "import paddle  # ccache, distutils",
        "from paddlenlp.transformers import LayoutXLMTokenizer  # pydantic 1 idioms",
        "from apache_beam.transforms.util import _BatchSizeEstimator",
        "_BatchSizeEstimator.linear_regression_numpy([1.0, 1.0, float(np.nextafter(1.0, 2.0))], [1.0, 2.0, 3.0])",
        "from apache_beam.ml.inference import base",
        "base._get_current_process_memory_in_bytes()  # Beam's 'Resource module is not available'",
        "warnings.warn('a real problem')",
        "print('done')",
    ])
    out = subprocess.run([sys.executable, "-W", "default", "-c", code], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout == "done\n"
    assert [ln for ln in out.stderr.splitlines() if not ln.startswith("  ")] == [
        "<string>:11: UserWarning: a real problem"], out.stderr


def _run(argv: list[str], capsys) -> tuple[int, list[str]]:
    code = cli.main(argv)
    return code, capsys.readouterr().err.strip().splitlines()


def test_a_missing_manifest_is_one_line(tmp_path, capsys, caplog, configured):
    missing = tmp_path / "inputs.csv"
    code, err = _run(["extract", f"--manifest={missing}", f"--output={tmp_path / 'out'}", "--ser_model_dir=none"],
                     capsys)
    assert code == 2  # the launcher's input probe refuses it before the pipeline starts
    assert len(err) == 1 and err[0].startswith("kiebeam extract: error: ") and str(missing) in err[0], err
    assert "Traceback" not in err[0]
    assert not [r for r in caplog.records if r.exc_info]  # Beam's logged traceback is dropped


def test_a_bad_output_is_one_line_and_verbose_keeps_the_trace(tmp_path, capsys, configured):
    image = ROOT / "pipelines" / "examples" / "zh_train_4.jpg"
    (tmp_path / "file").write_text("not a folder")
    argv = ["extract", f"--input={image}", f"--output={tmp_path / 'file' / 'out'}", "--ser_model_dir=none",
            "--max_pixels=1000"]  # the page fails before OCR: the run is about the output alone
    code, err = _run(argv, capsys)
    assert code == 2  # the launcher's output probe refuses it before the pipeline starts
    assert len(err) == 1 and "kiebeam extract: error: " in err[0] and str(tmp_path / "file") in err[0], err
    with pytest.raises(Exception, match="file"):
        cli.main([*argv, "--verbose"])
