"""Paddle's native bf16 notice is dropped from stderr, and nothing else is."""

from __future__ import annotations

import os

from models.paddle_infer import _BF16_NOTICE, _without_native_notice


def test_only_the_notice_is_dropped(capfd):
    with _without_native_notice(_BF16_NOTICE):
        os.write(2, b"I1202 12:00:00.000000 1 analysis_config.cc:713] " + _BF16_NOTICE + b"\n")
        os.write(2, b"E1202 12:00:00.000001 1 something.cc:1] a real problem\n")
    os.write(2, b"after\n")
    err = capfd.readouterr().err
    assert "BFLOAT16" not in err
    assert "a real problem" in err and err.endswith("after\n")


def test_the_stream_is_restored_after_an_error(capfd):
    try:
        with _without_native_notice(_BF16_NOTICE):
            os.write(2, b"kept line\n")
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    os.write(2, b"still here\n")
    assert capfd.readouterr().err == "kept line\nstill here\n"
