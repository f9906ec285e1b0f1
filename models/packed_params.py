"""Packed parameter files: a bundled model's ``inference.pdiparams`` in fewer bytes, unpacked on first use.

The repository keeps each bundled file under 15 MB; a model with a pretrained 384-wide encoder is ~70 MB of
float32. A Paddle combined-parameter file is a sequence of tensors, each a small header (format versions, LoD, a
``TensorDesc`` protobuf with the data type and dims) followed by its raw data. :func:`pack` keeps every header byte
and stores each float32 tensor's data as

* ``q4``: tables of more than :data:`Q4_MIN_ROWS` rows (the word embeddings) in blocks of 32 values along a row,
  each an fp16 scale and 16 bytes of 4-bit codes (value ``(code - 8) * scale``);
* ``q8``: other matrices of at least :data:`Q8_MIN_SIZE` values as int8 with one float32 scale per row;
* ``raw``: everything else (biases, LayerNorms, int64 buffers) as it was.

:func:`unpack` writes the float32 file back. Unpacking is deterministic, so the unpacked file's sha256 is known when
the folder is packed and ``SHA256SUMS`` pins both files; the model that is evaluated and shipped is the unpacked
one (rounding included). :func:`models.paddle_infer.find_program` unpacks a folder's
``inference.pdiparams.packed`` the first time the folder is loaded.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np

__all__ = ["PACKED_SUFFIX", "Q4_MIN_ROWS", "Q8_MIN_SIZE", "pack", "unpack", "ensure_unpacked", "rounded",
           "pack_folder", "q4_values", "read_varint"]

PACKED_SUFFIX = ".packed"
Q4_MIN_ROWS = 4096
Q8_MIN_SIZE = 65536
_MAGIC = b"KBPACK01"
_RAW, _Q8, _Q4 = 0, 1, 2
_ITEM = {0: 1, 1: 2, 2: 4, 3: 8, 4: 2, 5: 4, 6: 8, 20: 1, 21: 1}  # Paddle VarType -> bytes per value
_FP32 = 5
_BLOCK = 32


def read_varint(data: bytes, at: int) -> tuple[int, int]:
    """A protobuf varint at ``at``: ``(value, position after it)``."""
    value = shift = 0
    while True:
        byte = data[at]
        value |= (byte & 0x7F) << shift
        at, shift = at + 1, shift + 7
        if not byte & 0x80:
            return value, at


def _header(data: bytes, at: int) -> tuple[int, int, list[int]]:
    """Reads one tensor header starting at ``at``: ``(end of the header, data type, dims)``."""
    (lod_levels,) = struct.unpack_from("<Q", data, at + 4)
    at += 12
    for _ in range(lod_levels):
        (size,) = struct.unpack_from("<Q", data, at)
        at += 8 + size
    (desc_len,) = struct.unpack_from("<i", data, at + 4)
    at += 8
    desc, dtype, dims, pos = data[at:at + desc_len], None, [], 0
    while pos < len(desc):  # TensorDesc: 1 data_type (varint), 2 dims (repeated int64)
        key, pos = read_varint(desc, pos)
        value, pos = read_varint(desc, pos)
        if key == 0x08:
            dtype = value
        elif key == 0x10:
            dims.append(value)
        else:
            raise ValueError(f"unexpected TensorDesc field {key >> 3}")
    if dtype not in _ITEM:
        raise ValueError(f"unsupported tensor data type {dtype}")
    return at + desc_len, dtype, dims


def _tensors(data: bytes) -> list[tuple[bytes, int, list[int], bytes]]:
    """``(header, data type, dims, raw data)`` of each tensor of a combined parameter file."""
    out, at = [], 0
    while at < len(data):
        end, dtype, dims = _header(data, at)
        size = int(np.prod(dims)) * _ITEM[dtype]
        out.append((data[at:end], dtype, dims, data[end:end + size]))
        at = end + size
    if at != len(data):
        raise ValueError("truncated parameter file")
    return out


def _scheme(dtype: int, dims: list[int], q4_min_rows: int, q8_min_size: int) -> int:
    if dtype != _FP32 or len(dims) != 2:
        return _RAW
    if dims[0] > q4_min_rows and dims[1] % _BLOCK == 0:
        return _Q4
    return _Q8 if dims[0] * dims[1] >= q8_min_size else _RAW


def _encode(values: np.ndarray, scheme: int) -> bytes:
    if scheme == _Q8:
        scale = np.abs(values).max(axis=1) / 127.0
        scale[scale == 0] = 1.0
        codes = np.clip(np.rint(values / scale[:, None]), -127, 127).astype(np.int8)
        return scale.astype("<f4").tobytes() + codes.tobytes()
    blocks = values.reshape(-1, _BLOCK)
    scale = (np.abs(blocks).max(axis=1) / 7.0).astype(np.float16)
    safe = np.where(scale == 0, 1.0, scale.astype(np.float32))
    codes = (np.clip(np.rint(blocks / safe[:, None]), -8, 7) + 8).astype(np.uint8)
    nibbles = codes[:, :16] | (codes[:, 16:] << 4)
    return scale.astype("<f2").tobytes() + nibbles.tobytes()


def _decode(payload: bytes, scheme: int, dims: list[int]) -> np.ndarray:
    rows, cols = dims
    if scheme == _Q8:
        scale = np.frombuffer(payload, "<f4", rows)
        codes = np.frombuffer(payload, np.int8, rows * cols, 4 * rows).reshape(rows, cols)
        return (codes.astype(np.float32) * scale[:, None]).astype("<f4")
    n = rows * cols // _BLOCK
    scale = np.frombuffer(payload, "<f2", n)
    nibbles = np.frombuffer(payload, np.uint8, n * 16, 2 * n).reshape(n, 16)
    return q4_values(scale, nibbles).reshape(rows, cols)


def q4_values(scales: np.ndarray, nibbles: np.ndarray) -> np.ndarray:
    """Float32 values of 4-bit blocks of 32 (llama.cpp's Q4_0 layout, which this file's ``q4`` and the pretrained
    encoder's file both use): ``scales`` ``(n,)`` fp16, ``nibbles`` ``(n, 16)`` bytes, value ``j`` in the low
    nibble of byte ``j`` and value ``j + 16`` in the high one, each ``(code - 8) * scale``; returns ``(n, 32)``."""
    codes = np.concatenate([nibbles & 0x0F, nibbles >> 4], axis=1).astype(np.float32) - 8.0
    return (codes * scales.astype(np.float32)[:, None]).astype("<f4")


def rounded(values: np.ndarray, *, q4_min_rows: int = Q4_MIN_ROWS, q8_min_size: int = Q8_MIN_SIZE) -> np.ndarray:
    """``values`` as :func:`pack` then :func:`unpack` give them back (float32 arrays; others unchanged), so a model
    can be trained further (an RE head on its encoder) on exactly the weights its packed folder will hold."""
    if values.dtype != np.float32:
        return values
    scheme = _scheme(_FP32, list(values.shape), q4_min_rows, q8_min_size)
    if scheme == _RAW:
        return values
    return _decode(_encode(values, scheme), scheme, list(values.shape))


def pack(params: str | os.PathLike, out: str | os.PathLike | None = None, *, q4_min_rows: int = Q4_MIN_ROWS,
         q8_min_size: int = Q8_MIN_SIZE) -> Path:
    """Packs a combined parameter file (see the module docstring); default output: ``params`` + ``.packed``.

    Args:
        params: the ``inference.pdiparams`` file.
        out: the packed file.
        q4_min_rows: float32 matrices of more rows (and a width that is a multiple of 32) go in 4-bit blocks.
        q8_min_size: other float32 matrices of at least this many values go in int8 rows.
    """
    params = Path(params)
    out = Path(out) if out else params.with_name(params.name + PACKED_SUFFIX)
    chunks = [_MAGIC]
    for header, dtype, dims, raw in _tensors(params.read_bytes()):
        scheme = _scheme(dtype, dims, q4_min_rows, q8_min_size)
        payload = raw if scheme == _RAW else _encode(np.frombuffer(raw, "<f4").reshape(dims), scheme)
        chunks += [struct.pack("<I", len(header)), header, struct.pack("<BQ", scheme, len(payload)), payload]
    out.write_bytes(b"".join(chunks))
    return out


def unpack(packed: str | os.PathLike, out: str | os.PathLike) -> Path:
    """Writes the float32 parameter file of a packed one (atomically: a reader never sees half a file)."""
    data, out = Path(packed).read_bytes(), Path(out)
    if data[:len(_MAGIC)] != _MAGIC:
        raise ValueError(f"{packed} is not a packed parameter file")
    chunks, at = [], len(_MAGIC)
    while at < len(data):
        (header_len,) = struct.unpack_from("<I", data, at)
        header = data[at + 4:at + 4 + header_len]
        at += 4 + header_len
        scheme, size = struct.unpack_from("<BQ", data, at)
        payload = data[at + 9:at + 9 + size]
        at += 9 + size
        if scheme == _RAW:
            chunks += [header, payload]
        else:
            chunks += [header, _decode(payload, scheme, _header(header, 0)[2]).tobytes()]
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    tmp.write_bytes(b"".join(chunks))
    os.replace(tmp, out)
    return out


def pack_folder(folder: str | os.PathLike) -> Path:
    """Packs an exported folder's ``inference.pdiparams`` and writes the unpacked file back over it, so the folder
    holds (and its ``SHA256SUMS``, written after this, pins) exactly what a packed copy unpacks to."""
    params = Path(folder) / "inference.pdiparams"
    packed = pack(params)
    unpack(packed, params)
    return packed


def ensure_unpacked(params: Path) -> bool:
    """Unpacks ``params`` from ``params.packed`` when only the packed file exists; True if it unpacked.

    Raises:
        ValueError: the folder cannot be written (the message says what to do).
    """
    packed = params.with_name(params.name + PACKED_SUFFIX)
    if params.is_file() or not packed.is_file():
        return False
    try:
        unpack(packed, params)
    except OSError as exc:
        raise ValueError(f"cannot unpack {packed} into {params} ({exc.strerror}): copy the folder somewhere "
                         f"writable, or run python -m models.packed_params unpack {packed}") from exc
    return True


if __name__ == "__main__":  # python -m models.packed_params {pack,unpack} FILE
    import sys

    verb, path = sys.argv[1], Path(sys.argv[2])
    if verb == "pack":
        print(pack(path))
    elif verb == "unpack":
        print(unpack(path, path.with_name(path.name.removesuffix(PACKED_SUFFIX))))
    else:
        raise SystemExit(f"usage: python -m models.packed_params {{pack,unpack}} FILE (got {verb!r})")
