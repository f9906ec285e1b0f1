"""Model-file integrity: verify a model folder against its ``SHA256SUMS`` before anything loads it.

Paddle's ``.pdparams`` files are pickles and ``.pdmodel``/``.json`` programs run native kernels: loading a
file from an untrusted place can run code. So every model folder kiebeam loads carries a ``SHA256SUMS``
file (``sha256sum`` format) that lists every file the loader reads, and the loader calls
:func:`verify_model_dir` first. A folder without ``SHA256SUMS`` is refused unless the caller passes
``allow_unverified=True`` (the ``--allow_unverified_models`` flag), which a user must choose explicitly.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from models.packed_params import ensure_unpacked

__all__ = ["ModelIntegrityError", "sha256_file", "verify_model_dir", "write_sha256sums"]

SUMS_FILE = "SHA256SUMS"


class ModelIntegrityError(ValueError):
    """A model folder failed verification; the message names the file and what is wrong."""


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Returns the hex sha256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _read_sums(sums_path: Path) -> dict[str, str]:
    sums: dict[str, str] = {}
    for n, raw in enumerate(sums_path.read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(maxsplit=1)
        if len(parts) != 2 or len(parts[0]) != 64:
            raise ModelIntegrityError(f"{sums_path}:{n}: malformed line {raw!r} (expected '<sha256>  <file>')")
        name = parts[1].lstrip("*").strip()
        if "/" in name or "\\" in name or name in (".", ".."):
            raise ModelIntegrityError(f"{sums_path}:{n}: file name {name!r} must be a plain name in the folder")
        sums[name] = parts[0].lower()
    return sums


def verify_model_dir(path: str | os.PathLike, required: list[str] | tuple[str, ...] = (),
                     *, allow_unverified: bool = False) -> dict[str, str]:
    """Verifies a model folder against its ``SHA256SUMS``.

    Args:
        path: the model folder.
        required: file names the loader will read; each must exist and, unless unverified loading is
            allowed, be listed in ``SHA256SUMS``.
        allow_unverified: accept a folder that has no ``SHA256SUMS`` (the user's explicit choice).

    Returns:
        ``{file name: sha256}`` of the verified files (empty when unverified loading was allowed and used).

    Raises:
        ModelIntegrityError: missing folder or file, missing sums file, unlisted file, or a checksum mismatch.
    """
    folder = Path(path)
    if not folder.is_dir():
        raise ModelIntegrityError(f"model folder {folder} does not exist or is not a folder")
    for name in required:
        ensure_unpacked(folder / name)
        if not (folder / name).is_file():
            raise ModelIntegrityError(f"model folder {folder} is missing {name}")
    sums_path = folder / SUMS_FILE
    if not sums_path.is_file():
        if allow_unverified:
            return {}
        raise ModelIntegrityError(
            f"model folder {folder} has no {SUMS_FILE}: refusing to load unverified model files "
            f"(.pdparams files are pickles and can run code). Write one with `sha256sum * > {SUMS_FILE}` "
            f"after checking where the files came from, or pass --allow_unverified_models.")
    sums = _read_sums(sums_path)
    for name in required:
        if name not in sums:
            raise ModelIntegrityError(f"{folder / name} is not listed in {sums_path}")
    verified = {}
    for name, want in sums.items():
        file = folder / name
        ensure_unpacked(file)  # a listed parameter file that ships packed (models.packed_params)
        if not file.is_file():
            raise ModelIntegrityError(f"{file} is listed in {sums_path} but missing")
        got = sha256_file(file)
        if got != want:
            raise ModelIntegrityError(f"checksum mismatch for {file}: expected {want}, got {got}")
        verified[name] = got
    return verified


def write_sha256sums(path: str | os.PathLike, names: list[str] | None = None) -> Path:
    """Writes ``SHA256SUMS`` for the given files (default: every regular file) of a folder we produced."""
    folder = Path(path)
    if names is None:
        names = sorted(p.name for p in folder.iterdir() if p.is_file() and p.name != SUMS_FILE)
    lines = [f"{sha256_file(folder / n)}  {n}" for n in names]
    out = folder / SUMS_FILE
    out.write_text("\n".join(lines) + "\n")
    return out
