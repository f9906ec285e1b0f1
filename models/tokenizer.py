"""The LayoutXLM tokenizer: train a small sentencepiece model, and open a tokenizer folder.

A tokenizer folder holds one file, ``sentencepiece.bpe.model`` (the name PaddleNLP's ``LayoutXLMTokenizer``
and the published XLM-R/LayoutXLM models use). Ids follow the fairseq mapping that LayoutXLM was trained with:
``<s>`` 0, ``<pad>`` 1, ``</s>`` 2, ``<unk>`` 3, every other piece ``spm id + 1`` (sentencepiece's own
``<unk>``, id 0, maps to 3), and ``<mask>`` = ``len(spm) + 1``. A model trained by :func:`train_tokenizer`
therefore uses sentencepiece ids ``<unk>`` 0, ``<s>`` 1, ``</s>`` 2 exactly as XLM-R's model does.

The published ``vi-layoutxlm-base-uncased`` checkpoints need the real XLM-R ``sentencepiece.bpe.model``
(vocabulary 250002); :func:`train_tokenizer` is for training from scratch and for tests.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterable
from pathlib import Path

__all__ = ["TOKENIZER_FILE", "TOKENIZER_FILES", "TokenizerError", "train_tokenizer", "load_tokenizer"]

TOKENIZER_FILE = "sentencepiece.bpe.model"
TOKENIZER_FILES = (TOKENIZER_FILE,)


class TokenizerError(ValueError):
    """A tokenizer folder is missing its model file or the file is not a sentencepiece model."""


def train_tokenizer(texts: Iterable[str], out_dir: str | os.PathLike, vocab_size: int = 8000,
                    *, character_coverage: float = 0.9995) -> Path:
    """Trains a sentencepiece (unigram, like XLM-R's) model on ``texts`` and saves a tokenizer folder.

    Args:
        texts: training sentences (one text line each; empty lines are skipped).
        out_dir: the folder to write ``sentencepiece.bpe.model`` into (created if needed).
        vocab_size: the wanted number of sentencepiece pieces. It is an upper bound: a small corpus gets
            fewer pieces (``hard_vocab_limit=False``). The model's vocabulary is ``pieces + 2``.
        character_coverage: share of characters covered by the alphabet (0.9995 suits CJK).

    Returns:
        The folder, loadable with :func:`load_tokenizer`.

    Raises:
        ValueError: ``vocab_size`` below 8 or no non-empty text.
    """
    import sentencepiece as spm

    if vocab_size < 8:
        raise ValueError(f"vocab_size={vocab_size} is too small, expected at least 8")
    lines = [t.strip() for t in texts if t and t.strip()]
    if not lines:
        raise ValueError("train_tokenizer got no non-empty text")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines), model_writer=model, vocab_size=vocab_size, model_type="unigram",
        character_coverage=character_coverage, hard_vocab_limit=False,
        # XLM-R's layout: <unk> 0, <s> 1, </s> 2, no pad piece (fairseq adds <pad> as id 1).
        unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
        minloglevel=2, num_threads=1, shuffle_input_sentence=False)
    (out / TOKENIZER_FILE).write_bytes(model.getvalue())
    return out


def load_tokenizer(folder: str | os.PathLike):  # noqa: ANN201 (paddlenlp is imported lazily)
    """Opens a tokenizer folder as PaddleNLP's ``LayoutXLMTokenizer`` (offline).

    Args:
        folder: a folder holding ``sentencepiece.bpe.model``.

    Returns:
        A ``paddlenlp.transformers.LayoutXLMTokenizer``.

    Raises:
        TokenizerError: the folder or its ``sentencepiece.bpe.model`` is missing, or the file is not a
            sentencepiece model (the message names the file).
    """
    path = Path(folder) / TOKENIZER_FILE
    if not path.is_file():
        raise TokenizerError(f"tokenizer file {path} is missing (a tokenizer folder holds {TOKENIZER_FILE})")
    import sentencepiece as spm

    try:
        spm.SentencePieceProcessor(model_file=str(path))
    except Exception as e:  # sentencepiece raises RuntimeError/OSError on a corrupt file
        raise TokenizerError(f"tokenizer file {path} is not a valid sentencepiece model: {e}") from e
    from paddlenlp.transformers import LayoutXLMTokenizer

    return LayoutXLMTokenizer(vocab_file=str(path))
