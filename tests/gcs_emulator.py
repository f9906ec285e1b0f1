"""A real local GCS server for ``gs://`` tests: ``gcp-storage-emulator`` on a free loopback port."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

__all__ = ["gcs_emulator", "put", "delete"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def gcs_emulator(bucket: str) -> Iterator[str]:
    """Starts an in-memory emulator with ``bucket``; yields the value for ``STORAGE_EMULATOR_HOST``.

    Settles Beam's GCS credentials first, as the launcher does, so that the first ``gs://`` access of a test process
    (often :func:`put`, before any pipeline runs) does not sit through Beam's ~24 s of credential-lookup retries.
    """
    from pipelines.options import _gcs_credentials_or_anonymous

    _gcs_credentials_or_anonymous()
    port = _free_port()
    exe = Path(sys.executable).parent / "gcp-storage-emulator"
    proc = subprocess.Popen([str(exe), "start", "--host", "127.0.0.1", "--port", str(port),
                             "--default-bucket", bucket, "--in-memory"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                time.sleep(0.2)
        else:
            pytest.fail("the GCS emulator did not start")
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def put(local: Path, uri: str) -> None:
    """Uploads a local file to ``uri`` through Beam's filesystems."""
    from apache_beam.io.filesystems import FileSystems

    with FileSystems.create(uri) as f:
        f.write(local.read_bytes())


def delete(uri: str) -> None:
    """Deletes ``uri`` through Beam's filesystems."""
    from apache_beam.io.filesystems import FileSystems

    FileSystems.delete([uri])
