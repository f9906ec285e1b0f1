"""What a ``kiebeam`` command prints: its progress and results, real problems, and failures as one line.

Libraries under the pipeline print notices a user cannot act on. Each is handled here, narrowly, at its source:

- Beam's ``RunInference`` logs "Resource module is not available for current platform" on every model load:
  ``apache_beam.ml.inference.base`` imports the stdlib ``resource`` module in one ``try`` with its optional
  ``ModelManager`` (which needs torch), so without torch it sets ``resource = None`` on Linux too. Handing it the
  module back fixes the cause (and Beam's model-memory metric works again).
- Paddle warns "No ccache found" on import (it matters only when compiling C++ extensions, which kiebeam never does),
  and setuptools' ``_distutils_hack`` warns that it replaces an already imported ``distutils`` (Paddle's import).
- Beam's ``BatchElements`` fits batch timings with ``numpy.polyfit``, which raises ``RankWarning`` when the timings
  are degenerate (few batches of one size); Beam then falls back on its own.
- paddlenlp's HTTP server module, imported with its tokenizers, uses pydantic 1 idioms (``PydanticDeprecatedSince20``).

A pipeline failure surfaces twice: Beam logs the step's exception with its traceback, then raises it. Without
``--verbose`` the log record is dropped and :func:`one_line` gives the command's single error line; with
``--verbose`` nothing is filtered, logging goes to INFO and the traceback is printed.
"""

from __future__ import annotations

import logging
import re
import warnings

__all__ = ["configure", "one_line"]

_WARNINGS = (  # (message regex, category, module regex): each matches one known notice only
    ("No ccache found", UserWarning, r"paddle\.utils\.cpp_extension"),
    ("Setuptools is replacing distutils", UserWarning, r"_distutils_hack"),
    ("", DeprecationWarning, r"paddlenlp\.server\."),
)


def configure(verbose: bool = False) -> None:
    """Sets up logging and silences the known notices (see the module docstring); call once per command.

    Args:
        verbose: keep every warning and Beam's own error logs, and log at INFO.
    """
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING)
    if verbose:
        return
    _restore_beam_resource_module()
    for message, category, module in _WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category, module=module)
    try:
        from numpy.exceptions import RankWarning
    except ImportError:  # numpy < 1.25
        from numpy import RankWarning  # type: ignore[attr-defined,no-redef]
    warnings.filterwarnings("ignore", category=RankWarning, module=r"apache_beam\.transforms\.util")
    # The step's exception is logged with its traceback right before Beam raises it; the command reports it.
    logging.getLogger("apache_beam.runners.common").setLevel(logging.CRITICAL)


def _restore_beam_resource_module() -> None:
    try:
        import resource
    except ImportError:  # not a Unix: Beam's notice is then true
        return
    from apache_beam.ml.inference import base

    if getattr(base, "resource", resource) is None:
        base.resource = resource


def one_line(error: BaseException) -> str:
    """The error as one line: ``Type: first line of the message``, with Beam's ``[while running 'Step']``.

    Args:
        error: the exception a command ended with.

    Returns:
        A single line (no traceback).
    """
    lines = str(error).strip().splitlines()
    text = lines[0] if lines else ""
    if len(lines) > 1 and "[while running" in lines[-1] and "[while running" not in text:
        text += " " + lines[-1].strip()
    if re.match(r"[A-Za-z_.]*(Error|Exception|Interrupt|Exit)\b", text):  # Beam re-raised it as RuntimeError("X: ...")
        return text
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
