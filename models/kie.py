"""KiePredictor: OCR pages in, SER labels + entities + RE question/answer pairs out (exported models only).

It runs folders written by ``models.checkpoint.export_inference`` through Paddle Inference
(``models.paddle_infer``), never the dynamic graph. Per page:

A SER (or RE) folder of the ``layoutxlm`` family (``metadata.json`` ``"needs_image": true``, LayoutXLM with its
visual backbone) also takes each page's image, prepared as PaddleOCR does (``models.page_image``); every window of
a page sees the whole page image. VI folders take none and nothing about images runs for them.

1. windows from ``models.features.build_windows`` (lines in reading order; boxes clipped to the page), batched
   by similar length and cut to the longest window rounded up to 64 tokens (``models.features.batch_windows``);
2. SER on every window of every page; the tokens' label probabilities are decoded per line
   (``models.ser_decoding``): ``decode="vote"`` is PaddleOCR's rule (argmax, ``I-X`` read as ``B-X``, majority
   vote per line, one entity per non-``O`` line, score = mean probability of the voted class);
   ``decode="bio"`` is constrained BIO Viterbi per line, one entity per ``B-X I-X*`` run, so one OCR line holding
   a key and its value becomes two entities with their own text and sub-line boxes;
3. RE, by the kind of the RE folder:

   * a PaddleOCR-layout RE model (``ReModel``): per window, all (question, answer) candidates, question-major;
     keep ``argmax == 1``, and in candidate order only the first question for each answer (PaddleOCR's rule);
   * a geometric RE head (``ReHeadModel``, models trained here): it reads the SER program's encoder states (one
     encoder for SER and RE) and each pair's relative geometry (``models.features.pair_features``); for each
     answer the most probable linked question;
   * ``"rule"``: no model, ``models.linker.link_by_rule`` over the entities' boxes (score 1.0).

   Model pairs exist only within a window: a question and an answer in different 512-token windows of a long
   page are never linked; the rule links across windows.

Boxes. The text detector pads each line's box for the recognizer (DB's unclip): against XFUND's annotated boxes,
PP-OCRv4 boxes are ~22% taller, ~0.1 of the text's height wider on each side (XFUND zh train documents 30..39, 387
lines whose text the recognizer got exactly right). Models trained here learnt layout from annotated boxes, so
:meth:`KiePredictor.__call__` first tightens each OCR box by ``ocr_box_margin`` x its height on every side
(:func:`tighten_boxes`; metadata ``"ocr_box_margin"``, 0 -- PaddleOCR's boxes as they are -- when absent), and the
entities (and the geometry RE reads) by ``entity_box_margin`` (metadata; ``ocr_box_margin`` when absent): the
models trained here read the detector's boxes as they are (tightened inputs moved their predictions on unseen pages)
and give their entities boxes shrunk by 0.08 x height (``training.box_tuning``). The OCR lines keep the detector's.

Colons. With ``bio`` decoding and metadata ``"colon_split": true`` (models trained here), an entity the model left
whole although its OCR line holds a key, the key's colon and a value ("有效期：2年") is cut at the colon into
QUESTION and ANSWER (:func:`models.ser_decoding.split_at_colon`); absent means off (PaddleOCR's checkpoints).

Continued lines. With ``bio`` decoding, a line whose first token the model calls ``I-X`` joins the entity of that
label it continues (a wrapped cell's next row, vertical text's next character: :meth:`KiePredictor._continued`);
metadata ``"continue_lines"`` says for which entities: ``true`` (or absent) every label, ``false`` none (every line
starts its own entities), or a list of labels. The session-12 model continues questions and headers only
(``training.default_model.CONTINUE_LINES``): answers that a line "continues" are mostly a row's next check-box
option or the next row of an answer XFUND labels row by row.

Wrapped cells. With metadata ``"cells_gap"`` (models trained here), the SER model reads the lines in the order
:func:`models.reading_order.cells_together` gives: a wrapped cell's next row right after the row above it, not after
the other cells of that row, so that it goes on with that row's entity; absent (or 0) means the OCR's order as it is
(PaddleOCR's checkpoints). The lines, their indices and the entities keep the OCR's order.

Line re-scorer. With ``bio`` decoding and metadata ``"line_rescorer"`` (``training.line_rescorer`` writes it), each
line's class is looked at again from its neighbourhood after decoding (``models.line_rescorer``,
:meth:`KiePredictor._rescore`); absent means off, as in the bundled model (README, levers table).

Thread-safe: the predictors are (models.paddle_infer) and the rest keeps no mutable state.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from models.features import (
    MODEL_INPUTS,
    PAIR_FEATURES,
    RE_ENTITY_LABELS,
    Window,
    batch_windows,
    build_windows,
    entity_re_inputs,
    normalize_box,
)
from models.integrity import sha256_file
from models.line_rescorer import LINE_CLASSES, LineRescorer, line_class_probs, line_features
from models.linker import link_by_rule
from models.model_files import LABELS_FILE, METADATA_FILE
from models.paddle_infer import InferenceOptions, PaddlePredictor
from models.page_image import kie_image_batch
from models.reading_order import cells_together
from models.ser_decoding import (
    COLONS,
    bio_spans,
    continues_line,
    merge_parts,
    split_at_colon,
    split_box,
    token_char_spans,
    viterbi_bio,
    vote_line_labels,
)
from models.tokenizer import TOKENIZER_FILE, load_tokenizer
from schemas.records import Entity, KeyValuePair, PageKie, PageOcr

__all__ = ["KiePredictor", "PageTokens", "KieEntity", "vote_line_labels", "select_pairs", "select_best_pairs",
           "tighten_boxes", "RULE", "DECODERS"]

_EXTRA_FILES = (LABELS_FILE, METADATA_FILE, TOKENIZER_FILE)
_DEFAULT_OPTIONS = InferenceOptions()
KIE_MKLDNN_CACHE_CAPACITY = 4
"""oneDNN input-shape cache of each SER/RE predictor when ``InferenceOptions.mkldnn_cache_capacity`` is 0 (unset).
Unbounded (Paddle's default), a base-size model kept ~0.3 GiB per window shape it had seen (README, Benchmarks)."""
RULE = "rule"
"""``re_dir`` value that selects the geometric rule instead of an RE model."""
DECODERS = ("vote", "bio")


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def select_pairs(pairs: np.ndarray, logits: np.ndarray, threshold: float = 0.5) -> list[tuple[int, int, float]]:
    """PaddleOCR's RE post-processing: linked candidates in order, at most one question per answer (the first).

    Args:
        pairs: ``(P, 2)`` candidate (question, answer) entity indices, in candidate order.
        logits: ``(P, 2)`` pair logits.
        threshold: a candidate is linked where its probability of "linked" is above this (0.5: PaddleOCR's
            ``argmax == 1``).

    Returns:
        ``(question, answer, probability of "linked")`` triples.

    >>> select_pairs(np.array([[0, 1], [2, 1], [2, 3]]), np.array([[0., 1.], [0., 2.], [1., 0.]]))
    [(0, 1, 0.7310585786300049)]
    """
    used: set[int] = set()
    out = []
    for q, a, p in _linked(pairs, logits, threshold):
        if a not in used:
            used.add(a)
            out.append((q, a, p))
    return out


def select_best_pairs(pairs: np.ndarray, logits: np.ndarray, threshold: float = 0.5) -> list[tuple[int, int, float]]:
    """For each answer, its most probable linked question (probability of "linked" above ``threshold``), in answer
    order.

    >>> select_best_pairs(np.array([[0, 1], [2, 1], [2, 3]]), np.array([[0., 1.], [0., 2.], [1., 0.]]))
    [(2, 1, 0.8807970779778823)]
    >>> select_best_pairs(np.array([[0, 1], [2, 3]]), np.array([[0., 1.], [1., 0.]]), threshold=0.2)
    [(0, 1, 0.7310585786300049), (2, 3, 0.2689414213699951)]
    """
    best: dict[int, tuple[int, float]] = {}
    for q, a, p in _linked(pairs, logits, threshold):
        if a not in best or p > best[a][1]:
            best[a] = (q, p)
    return [(q, a, s) for a, (q, s) in sorted(best.items())]


def _linked(pairs: np.ndarray, logits: np.ndarray, threshold: float = 0.5) -> list[tuple[int, int, float]]:
    """Every candidate whose probability of "linked" is above ``threshold`` (0.5: ``argmax == 1``), in order."""
    probs = _softmax(np.asarray(logits, dtype=np.float64))
    return [(int(q), int(a), float(p[1])) for (q, a), p in zip(np.asarray(pairs).tolist(), probs) if p[1] > threshold]


def _line_rescorer(folder: Path, meta: dict) -> LineRescorer | None:
    """The SER folder's line re-scorer (metadata ``line_rescorer``), or None."""
    if not meta.get("line_rescorer"):
        return None
    try:
        return LineRescorer.from_dict(meta["line_rescorer"])
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{folder / METADATA_FILE}: line_rescorer: {e}") from e


def _read_json(folder: Path, name: str) -> dict:
    try:
        return json.loads((folder / name).read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot read {folder / name}: {e}") from e


@dataclass(frozen=True)
class PageTokens:
    """One page's windows and the SER program's outputs on them.

    Attributes:
        windows: the page's windows.
        probs: per window, ``(T, C)`` label probabilities of its real tokens (None for a window without lines).
        hidden: per window, ``(T, H)`` encoder states (only when a geometric RE head needs them).
        pieces: per page line, its sentencepiece pieces.
        image: ``(3, 224, 224)`` float32 page image of a ``layoutxlm``-family model (``models.page_image``), else
            None.
    """

    windows: list[Window]
    probs: list[np.ndarray | None]
    hidden: list[np.ndarray | None]
    pieces: list[list[str]]
    image: np.ndarray | None = None


@dataclass(frozen=True)
class KieEntity:
    """A decoded entity before it becomes a record: where its tokens are, for RE."""

    label: str
    text: str
    box: tuple[int, int, int, int]
    score: float
    line: int
    window: int
    start: int
    end: int
    more_lines: tuple[int, ...] = ()
    """The lines after ``line`` the entity goes on over (one entity the detector cut in several lines)."""

    @property
    def lines(self) -> tuple[int, ...]:
        """Every OCR line of the entity, in reading order."""
        return (self.line, *self.more_lines)


def tighten_boxes(page: PageOcr, margin: float) -> PageOcr:
    """The page with each line's ``box`` shrunk by ``margin`` x its height on every side (``char_x`` re-expressed in
    the narrower box; text, polygon and scores unchanged); the page itself for ``margin`` 0.

    >>> from schemas.records import OcrLine
    >>> line = OcrLine("ab", 1.0, ((0, 0), (120, 0), (120, 20), (0, 20)), (0, 0, 120, 20), char_x=(0.25, 0.75))
    >>> t = tighten_boxes(PageOcr(200, 100, (line,)), 0.1).lines[0]
    >>> t.box, t.char_x
    ((2, 2, 118, 18), (0.241, 0.759))
    """
    if margin <= 0:
        return page
    lines = []
    for ln in page.lines:
        x0, y0, x1, y1 = ln.box
        d = min(margin * (y1 - y0), (x1 - x0) / 4, (y1 - y0) / 4)
        box = (int(round(x0 + d)), int(round(y0 + d)), int(round(x1 - d)), int(round(y1 - d)))
        w, nw = max(x1 - x0, 1), max(box[2] - box[0], 1)
        char_x = tuple(round(min(max((c * w - (box[0] - x0)) / nw, 0.0), 1.0), 3) for c in ln.char_x)
        lines.append(replace(ln, box=box, char_x=char_x))
    return replace(page, lines=tuple(lines))


class KiePredictor:
    """SER (+ optional RE) over OCR pages, with exported models.

    Build it with :meth:`from_dirs`.

    >>> kie = KiePredictor.from_dirs("models/kie/ser", "models/kie/re")  # doctest: +SKIP
    >>> [page_kie] = kie([page_ocr])  # doctest: +SKIP
    """

    def __init__(self, ser: PaddlePredictor, labels: list[str], tokenizer, max_len: int,  # noqa: ANN001
                 re: PaddlePredictor | str | None = None, *, re_kind: str = "paddleocr", decode: str = "vote",
                 batch_size: int = 8, multiple: int = 0, pair_features: Sequence[str] = PAIR_FEATURES,
                 label_bias: dict[str, float] | None = None, ocr_box_margin: float = 0.0,
                 entity_box_margin: float | None = None, ser_image: bool = False, re_image: bool = False,
                 colon_split: bool = False, continue_lines: bool | Sequence[str] = True,
                 line_rescorer: LineRescorer | None = None, cells_gap: float = 0.0,
                 link_threshold: float = 0.5) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not labels or labels[0] != "O":
            raise ValueError(f"SER labels must start with 'O', got {labels}")
        if decode not in DECODERS:
            raise ValueError(f"decode={decode!r}, expected one of {DECODERS}")
        if re_kind not in ("paddleocr", "geo", RULE):
            raise ValueError(f"re_kind={re_kind!r}, expected 'paddleocr', 'geo' or 'rule'")
        self.ser, self.re, self.re_kind = ser, (None if re == RULE else re), (RULE if re == RULE else re_kind)
        self.linking = re is not None
        self.labels = list(labels)
        self.tokenizer = tokenizer
        self.max_len = max_len
        self.batch_size = batch_size
        self.decode = decode
        entity_box_margin = ocr_box_margin if entity_box_margin is None else entity_box_margin
        for name, value in (("ocr_box_margin", ocr_box_margin), ("entity_box_margin", entity_box_margin)):
            if not 0.0 <= value < 0.25:
                raise ValueError(f"{name}={value} must be in [0, 0.25)")
        self.ocr_box_margin = float(ocr_box_margin)  # the detector's boxes as the models read them
        self.entity_box_margin = float(entity_box_margin)  # ... as the entities (and RE) get them
        # bio decoding: a key and its value left in one entity are cut at the key's colon (split_at_colon)
        self.colon_split = bool(colon_split) and {"B-QUESTION", "B-ANSWER"} <= set(labels)
        # bio decoding: a line whose first token the model calls I-X may join the entity it continues (_continued),
        # if that entity's label is one of these (True: every label, False: none)
        classes = {name[2:] for name in labels if name[:2] in ("B-", "I-")}
        self.continue_labels = frozenset(classes if continue_lines is True else continue_lines or ())
        self.multiple = multiple
        if not 0.0 <= cells_gap <= 1.0:
            raise ValueError(f"cells_gap={cells_gap} must be in [0, 1] line heights")
        # the SER model reads a wrapped cell's rows one after another (models.reading_order.cells_together); 0: off
        self.cells_gap = float(cells_gap)
        self.line_rescorer = line_rescorer  # bio decoding: each line's class looked at again (_rescore)
        if not 0.0 < link_threshold < 1.0:
            raise ValueError(f"link_threshold={link_threshold} must be in (0, 1)")
        # RE: a candidate pair is linked where the model's probability of "linked" is above this (0.5: argmax)
        self.link_threshold = float(link_threshold)
        self.pair_features = tuple(pair_features)  # the geometric head's inputs, as it was trained
        unknown = sorted(set(label_bias or {}) - set(self.labels))
        if unknown:
            raise ValueError(f"label_bias names labels {unknown} the SER model does not have ({self.labels})")
        # Added to the SER logits before any decoding (a calibration tuned on validation data, training.calibrate).
        self.label_bias = np.array([float((label_bias or {}).get(n, 0.0)) for n in self.labels])
        # LayoutXLM with its visual backbone (metadata "needs_image"): its programs take the page image too.
        self.ser_image, self.re_image = ser_image, bool(re_image and self.re is not None)
        self.needs_image = self.ser_image or self.re_image
        index = {n: i for i, n in enumerate(self.labels)}
        self._to_b = np.array([index.get("B-" + n[2:], i) if n.startswith("I-") else i
                               for i, n in enumerate(self.labels)], dtype=np.int64)
        self._class_of = [n[2:] if n[:2] in ("B-", "I-") else "O" for n in self.labels]
        re_version = "" if re is None else ";re=rule" if re == RULE else f";re={self.re.version}"
        self.version = f"ser={ser.version}" + re_version + (";decode=bio" if decode == "bio" else "")
        self.runtime = ";".join(f"{name}={model.runtime.label()}" for name, model in (("ser", ser), ("re", self.re))
                                if hasattr(getattr(model, "runtime", None), "label"))
        """Backend/device/precision of the SER and RE programs, e.g. ``ser=paddle/cpu/bf16;re=paddle/cpu/bf16``."""

    @classmethod
    def from_dirs(cls, ser_dir: str | os.PathLike, re_dir: str | os.PathLike | None = None, *,
                  inference: InferenceOptions = _DEFAULT_OPTIONS, batch_size: int = 8,
                  decode: str | None = None) -> KiePredictor:
        """Loads exported SER (and RE) folders, each verified against its ``SHA256SUMS`` first.

        Args:
            ser_dir: exported SER folder (``models.checkpoint.export_inference``).
            re_dir: exported RE folder (PaddleOCR layout or a geometric head), ``"rule"`` for the geometric rule,
                or None for no pairs.
            inference: device / oneDNN / threads / ``allow_unverified``; ``mkldnn_cache_capacity`` 0 (unset) runs
                SER/RE with :data:`KIE_MKLDNN_CACHE_CAPACITY`, any other value as given.
            batch_size: windows per model call.
            decode: ``"vote"`` or ``"bio"``; default: the SER folder's ``metadata.json`` ``decode`` (``bio`` for
                models trained here), else ``"vote"`` (PaddleOCR's).

        Returns:
            The predictor.

        Raises:
            ValueError: a folder that fails verification, is not the right task, an RE model whose tokenizer or
                window length differ from the SER model's, or a geometric head trained on another encoder.
        """
        if not inference.mkldnn_cache_capacity:
            inference = replace(inference, mkldnn_cache_capacity=KIE_MKLDNN_CACHE_CAPACITY)
        ser = PaddlePredictor(ser_dir, inference, extra_files=_EXTRA_FILES)
        ser_dir = Path(ser_dir)
        meta, labels = _read_json(ser_dir, METADATA_FILE), _read_json(ser_dir, LABELS_FILE)
        if labels.get("task") != "ser":
            raise ValueError(f"{ser_dir / LABELS_FILE} is for task {labels.get('task')!r}, expected 'ser'")
        re: PaddlePredictor | str | None = None
        re_kind, re_meta, extra = "paddleocr", {}, {}
        if re_dir is not None and str(re_dir) == RULE:
            re = RULE
        elif re_dir is not None:
            re = PaddlePredictor(re_dir, inference, extra_files=_EXTRA_FILES)
            re_dir = Path(re_dir)
            re_meta = _read_json(re_dir, METADATA_FILE)
            if re_meta.get("task") != "re":
                raise ValueError(f"{re_dir / METADATA_FILE} is for task {re_meta.get('task')!r}, expected 're'")
            if sha256_file(re_dir / TOKENIZER_FILE) != sha256_file(ser_dir / TOKENIZER_FILE):
                raise ValueError(f"the RE tokenizer {re_dir / TOKENIZER_FILE} differs from the SER tokenizer "
                                 f"{ser_dir / TOKENIZER_FILE}; both models must share one tokenizer")
            if re_meta.get("max_len") != meta.get("max_len"):
                raise ValueError(f"RE max_len {re_meta.get('max_len')} != SER max_len {meta.get('max_len')}")
            if re_meta.get("re_head") == "geo":
                re_kind = "geo"
                want = (re_meta.get("encoder") or {}).get("fingerprint")
                if not want or want != meta.get("encoder_fingerprint"):
                    raise ValueError(f"the RE head {re_dir} reads the encoder states of the SER model it was trained "
                                     f"on (fingerprint {str(want)[:12]}...), but {ser_dir} holds another encoder "
                                     f"({str(meta.get('encoder_fingerprint'))[:12]}...)")
                names = list(re_meta.get("pair_features") or [])
                unknown = [n for n in names if n not in PAIR_FEATURES]
                if not names or unknown:
                    raise ValueError(f"{re_dir / METADATA_FILE}: pair_features {unknown or names} are not "
                                     f"features this version computes ({list(PAIR_FEATURES)})")
                extra["pair_features"] = names
            extra["link_threshold"] = float(re_meta.get("link_threshold", 0.5))
        # Programs exported by this version take any window length; older ones (and PaddleOCR's) only max_len.
        dynamic = bool(meta.get("dynamic_length")) and (re is None or re == RULE or bool(re_meta.get("dynamic_length")))
        return cls(ser, labels["labels"], load_tokenizer(ser_dir), int(meta.get("max_len", 512)), re,
                   re_kind=re_kind, decode=decode or meta.get("decode", "vote"), batch_size=batch_size,
                   multiple=64 if dynamic else 0, label_bias=meta.get("label_bias"),
                   ocr_box_margin=float(meta.get("ocr_box_margin", 0.0)),
                   entity_box_margin=meta.get("entity_box_margin"),
                   colon_split=bool(meta.get("colon_split", False)),
                   continue_lines=meta.get("continue_lines", True),
                   line_rescorer=_line_rescorer(ser_dir, meta), cells_gap=float(meta.get("cells_gap", 0.0)),
                   ser_image=bool(meta.get("needs_image")),
                   re_image=bool(re_meta.get("needs_image")) and re_kind == "paddleocr", **extra)

    # ------------------------------------------------------------------------------------------- SER

    def _page_images(self, pages: Sequence[PageOcr], images: Sequence[np.ndarray | None] | None
                     ) -> list[np.ndarray | None]:
        """Each page's normalised ``(3, 224, 224)`` image when a model needs one, else Nones."""
        if not self.needs_image:
            return [None] * len(pages)
        if images is None or len(images) != len(pages) or any(im is None for im in images):
            raise ValueError("this KIE model is LayoutXLM with its visual backbone (metadata.json needs_image): it "
                             "needs each page's image, and the pages came without one; pass images (the pipeline "
                             "does when the SER folder says needs_image)")
        return list(kie_image_batch(list(images)))

    def line_order(self, page: PageOcr) -> list[int]:
        """The order the SER model reads the page's lines in: theirs, with each wrapped cell's rows together
        when :attr:`cells_gap` is set (``models.reading_order.cells_together``)."""
        if not self.cells_gap:
            return list(range(len(page.lines)))
        return cells_together([ln.box for ln in page.lines], range(len(page.lines)), self.cells_gap)

    def windows(self, page: PageOcr, tokenizer=None, **kwargs: Any) -> list[Window]:  # noqa: ANN001
        """The page's model windows (``models.features.build_windows``, ``kwargs`` passed on: ``token_ids`` or
        a ``tokenizer``, line labels for gold tags), its lines in :meth:`line_order`; ``line_ids`` stay the page's
        line indices."""
        order = self.line_order(page)
        lines = [page.lines[k] for k in order]
        for key in ("token_ids", "line_labels"):
            if kwargs.get(key) is not None:
                kwargs[key] = [kwargs[key][k] for k in order]
        out = build_windows([ln.text for ln in lines], [ln.box for ln in lines], page.width, page.height, tokenizer,
                            max_len=self.max_len, clip=True, **kwargs)
        return [replace(w, line_ids=tuple(order[i] for i in w.line_ids)) for w in out]

    def tokens(self, pages: Sequence[PageOcr], images: Sequence[np.ndarray | None] | None = None, *,
               keep_hidden: bool | None = None) -> list[PageTokens]:
        """Windows of each page and the SER program's probabilities (and encoder states) on them.

        Args:
            pages: OCR pages.
            images: per page, its RGB uint8 image (any size, or the 224x224 ``models.page_image.kie_thumbnail``);
                needed only when :attr:`needs_image`.
            keep_hidden: keep the encoder states (``PageTokens.hidden``); default: when a geometric RE head reads
                them.
        """
        page_images = self._page_images(pages, images)
        pieces = [[self.tokenizer.tokenize(ln.text) if ln.text else [] for ln in page.lines] for page in pages]
        page_windows = []
        for page, page_pieces in zip(pages, pieces):
            ids = [list(self.tokenizer.convert_tokens_to_ids(p)) if p else [] for p in page_pieces]
            page_windows.append(self.windows(page, token_ids=ids))
        flat = [(p, i) for p, ws in enumerate(page_windows) for i, w in enumerate(ws) if w.line_ids]
        flat.sort(key=lambda x: page_windows[x[0]][x[1]].num_tokens)  # similar lengths share a batch
        probs: list[list[np.ndarray | None]] = [[None] * len(ws) for ws in page_windows]
        hidden: list[list[np.ndarray | None]] = [[None] * len(ws) for ws in page_windows]
        keep_hidden = self.re_kind == "geo" if keep_hidden is None else keep_hidden
        for s in range(0, len(flat), self.batch_size):
            chunk = flat[s:s + self.batch_size]
            batch = batch_windows([page_windows[p][i] for p, i in chunk], multiple=self.multiple)
            inputs = [batch[k] for k in MODEL_INPUTS]
            if self.ser_image:
                inputs.append(np.stack([page_images[p] for p, _ in chunk]))
            outs = self.ser.run(inputs)
            logits = outs[0]
            for row, (p, i) in enumerate(chunk):
                n = page_windows[p][i].num_tokens
                probs[p][i] = _softmax(logits[row, :n].astype(np.float64) + self.label_bias)
                if keep_hidden:
                    if len(outs) < 2:
                        raise ValueError("the SER program outputs no encoder states; re-export it with this version "
                                         "to use a geometric RE head")
                    hidden[p][i] = outs[1][row, :n]
        return [PageTokens(ws, pr, hd, pc, im)
                for ws, pr, hd, pc, im in zip(page_windows, probs, hidden, pieces, page_images)]

    @staticmethod
    def _line_tokens(n_lines: int, toks: PageTokens) -> list[list[tuple[int, int, int]]]:
        """Per line, its pieces' places: ``(window, start, end)`` token ranges in window order."""
        places: list[list[tuple[int, int, int]]] = [[] for _ in range(n_lines)]
        for i, w in enumerate(toks.windows):
            for k, (s, e) in zip(w.line_ids, w.line_spans):
                places[k].append((i, s, e))
        return places

    @staticmethod
    def _continued(page: PageOcr, k: int, ents: Sequence[KieEntity], tails: Sequence[tuple[int, int]],
                   line_ends: dict[int, tuple[int, int]], window: int, lookback: int = 8) -> int | None:
        """Index into ``ents`` of the latest of the last ``lookback`` entities that lie in ``window`` and ended
        with their last line (``tails``: each entity's ``(window, token end)`` on its last line, against
        ``line_ends``), where line ``k`` continues that line (``models.ser_decoding.continues_line``: a wrapped
        cell's next row, vertical text's next character, its row's next piece); None if none does."""
        for at in range(len(ents) - 1, max(len(ents) - lookback, 0) - 1, -1):
            last = ents[at].lines[-1]
            if (ents[at].window == window and line_ends.get(last) == tails[at]
                    and continues_line(page.lines[last].box, page.lines[k].box)):
                return at
        return None

    def entities(self, page: PageOcr, toks: PageTokens, decode: str | None = None, *,
                 boxes: PageOcr | None = None) -> tuple[list[str], list[float], list[KieEntity]]:
        """Decodes one page: ``(line labels, line scores, entities)`` (``decode`` overrides the predictor's);
        ``boxes``: the same page with the boxes (and ``char_x``) the entities get, if not ``page``'s
        (:meth:`box_views`; which lines continue which is still read from ``page``)."""
        decode = decode or self.decode
        boxed = (boxes or page).lines
        names, scores, ents = [], [], []
        line_ends: dict[int, tuple[int, int]] = {}  # line -> (window, token end) of its last piece
        tails: list[tuple[int, int]] = []  # entity -> (window, token end) of its part on its last line
        for k, (line, places) in enumerate(zip(page.lines, self._line_tokens(len(page.lines), toks))):
            if not places:
                names.append("O")
                scores.append(0.0)
                continue
            pr = np.concatenate([toks.probs[i][s:e] for i, s, e in places])
            w0, s0, e0 = places[0]
            if decode == "vote":
                cls = self._class_of[vote_line_labels([pr.argmax(-1)], self._to_b)[0]]
                same = [i for i, c in enumerate(self._class_of) if c == cls]
                score = float(pr[:, same].sum(axis=1).mean())
                names.append(cls)
                scores.append(score)
                if cls != "O":
                    ents.append(KieEntity(cls, line.text, tuple(boxed[k].box), score, k, w0, s0, e0))
                    tails.append((w0, e0))
                continue
            # The line may go on with an entity that ended with its line where this line's text would continue it.
            at = self._continued(page, k, ents, tails, line_ends, w0) if len(places) == 1 else None
            at = at if at is not None and ents[at].label in self.continue_labels else None
            prev = ents[at] if at is not None else None
            cont = prev.label if prev is not None else None
            line_ends[k] = places[-1][0], places[-1][2]
            path = viterbi_bio(pr, self.labels, continues=cont)
            glue = cont is not None and self.labels[path[0]] == f"I-{cont}"
            spans = bio_spans(path, pr, self.labels)
            colon = self.colon_split and any(c in line.text for c in COLONS)
            chars = token_char_spans(toks.pieces[k], line.text) if len(spans) > 1 or colon else []
            if colon:
                spans = split_at_colon(spans, chars, line.text)
            longest = max(spans, key=lambda sp: sp.end - sp.start, default=None)
            names.append(longest.label if longest else "O")
            scores.append(longest.score if longest else float(pr[:, 0].mean()))
            for sp in spans:
                if len(spans) == 1:
                    text, box = line.text, tuple(boxed[k].box)
                else:
                    c0, c1 = chars[sp.start][0], chars[sp.end - 1][1]
                    text = line.text[c0:c1].strip() or line.text
                    box = split_box(boxed[k].box, len(line.text), c0, c1, boxed[k].char_x)
                # The entity's tokens in the window of its first token (a line is cut only beyond max_len tokens).
                offset, wi, s, e = 0, *places[0]
                for wi, s, e in places:  # noqa: B007 (the loop finds the window holding the span's first token)
                    if sp.start < offset + (e - s):
                        break
                    offset += e - s
                start = s + sp.start - offset
                end = min(e, start + sp.end - sp.start)
                if glue and sp is spans[0]:  # an earlier line's entity goes on here: one entity over both
                    n_prev, n = prev.end - prev.start, end - start
                    union = tuple(f(a, b) for f, a, b in zip((min, min, max, max), prev.box, box))
                    # Its tokens (for RE) grow only over adjacent lines: other lines' tokens may sit in between.
                    ents[at] = replace(prev, text=merge_parts([prev.text, text])[0], box=union,
                                       end=end if prev.end == start else prev.end,
                                       score=(prev.score * n_prev + sp.score * n) / (n_prev + n),
                                       more_lines=prev.more_lines + (k,))
                    tails[at] = wi, end
                    continue
                ents.append(KieEntity(sp.label, text, box, sp.score, k, wi, start, end))
                tails.append((wi, end))
        if self.line_rescorer is not None and decode == "bio":
            return self._rescore(page, toks, names, scores, ents, boxed)
        return names, scores, ents

    def line_features(self, page: PageOcr, toks: PageTokens, names: Sequence[str], ents: Sequence[KieEntity]
                      ) -> np.ndarray:
        """The line re-scorer's inputs for a page the decoder read as ``names`` and ``ents``
        (``models.line_rescorer.line_features``; ``training.line_rescorer`` fits on them)."""
        places = self._line_tokens(len(page.lines), toks)
        token_probs = [np.concatenate([toks.probs[i][s:e] for i, s, e in pl]) if pl else None for pl in places]
        rule_q, rule_a = [False] * len(names), [False] * len(names)
        for q, a in link_by_rule([e.box for e in ents], [e.label for e in ents]):
            for k in ents[q].lines:
                rule_q[k] = True
            for k in ents[a].lines:
                rule_a[k] = True
        return line_features([ln.box for ln in page.lines], [ln.text for ln in page.lines],
                             line_class_probs(self.labels, token_probs), names, rule_q, rule_a)

    def _rescore(self, page: PageOcr, toks: PageTokens, names: list[str], scores: list[float],
                 ents: list[KieEntity], boxed: Sequence) -> tuple[list[str], list[float], list[KieEntity]]:
        """The line re-scorer's second look (``models.line_rescorer``): an entity whose lines the re-scorer gives
        one class takes it (OTHER: it is dropped); an entity over several lines the re-scorer gives different
        classes is parted, each line its own entity; each line without an entity becomes one where the re-scorer
        gives it a class; a line the decoder cut into several entities (a key and its value) stays as it is."""
        places = self._line_tokens(len(page.lines), toks)
        probs = self.line_rescorer.probs(self.line_features(page, toks, names, ents))
        per_line = np.zeros(len(names), dtype=np.int64)
        for e in ents:
            per_line[list(e.lines)] += 1
        names, scores, out = list(names), list(scores), []
        for e in ents:
            if per_line[list(e.lines)].max() > 1:
                out.append(e)
                continue
            classes = {int(probs[k].argmax()) for k in e.lines}
            if len(classes) > 1:  # the re-scorer parts the lines the decoder joined: each its own entity
                for k in e.lines:
                    per_line[k] = 0
                continue
            c = classes.pop()
            cls, score = LINE_CLASSES[c], float(probs[list(e.lines), c].mean())
            for k in e.lines:
                names[k], scores[k] = cls, score
            if cls != "O":
                out.append(replace(e, label=cls, score=score))
        for k, pl in enumerate(places):
            if per_line[k] or not pl:
                continue
            cls = LINE_CLASSES[int(probs[k].argmax())]
            names[k], scores[k] = cls, float(probs[k].max())
            if cls == "O":
                continue
            w0, s0, e0 = pl[0]
            out.append(KieEntity(cls, page.lines[k].text, tuple(boxed[k].box), scores[k], k, w0, s0, e0))
        out.sort(key=lambda e: e.line)  # stable: a line's entities keep their order
        return names, scores, out

    # ------------------------------------------------------------------------------------------- RE

    def relate(self, page: PageOcr, toks: PageTokens, ents: Sequence[KieEntity], *,
               every_link: bool = False) -> list[tuple[int, int, float]]:
        """Links a page's entities: ``(question index, answer index, score)`` into ``ents``.

        Args:
            page / toks: the page and its :meth:`tokens`.
            ents: the entities to link (decoded, or gold ones for evaluation).
            every_link: return every candidate the model calls linked (``argmax == 1``; PaddleOCR's RE metric)
                instead of one question per answer.
        """
        if not self.linking:
            return []
        if self.re_kind == RULE:
            return [(q, a, 1.0) for q, a in link_by_rule([e.box for e in ents], [e.label for e in ents])]
        items = []
        for i, w in enumerate(toks.windows):
            members = [j for j, e in enumerate(ents) if e.window == i and e.label in RE_ENTITY_LABELS]
            if not members:
                continue
            spans = [(ents[j].start, ents[j].end, RE_ENTITY_LABELS[ents[j].label]) for j in members]
            boxes = [normalize_box(ents[j].box, page.width, page.height, clip=True) for j in members]
            r = entity_re_inputs(spans, members, boxes=boxes)
            if len(r.pairs):
                items.append((i, w, r))
        links: list[tuple[int, int, float]] = []
        geo = self.re_kind == "geo"
        for s in range(0, len(items), self.batch_size):
            chunk = items[s:s + self.batch_size]
            batch = batch_windows([w for _, w, _ in chunk], re=[r for _, _, r in chunk], geometry=geo,
                                  feature_names=self.pair_features, multiple=self.multiple)
            if geo:
                t = batch["input_ids"].shape[1]
                hid = np.zeros((len(chunk), t, toks.hidden[chunk[0][0]].shape[1]), np.float32)
                for b, (i, _, _) in enumerate(chunk):
                    hid[b, :len(toks.hidden[i])] = toks.hidden[i]
                logits = self.re.run([hid, batch["entities"], batch["pairs"], batch["pair_features"]])[0]
            else:
                image = [np.repeat(toks.image[None], len(chunk), axis=0)] if self.re_image else []
                logits = self.re.run([batch[k] for k in MODEL_INPUTS] + image + [batch["entities"], batch["pairs"]])[0]
            for b, (_, _, r) in enumerate(chunk):
                pick = _linked if every_link else select_best_pairs if geo else select_pairs
                links += [(r.entity_line_ids[q], r.entity_line_ids[a], sc)
                          for q, a, sc in pick(r.pairs, logits[b, :len(r.pairs)], self.link_threshold)]
        if every_link:
            return links
        used, out = set(), []
        for q, a, sc in links:  # windows in order; one question per answer over the page
            if a not in used:
                used.add(a)
                out.append((q, a, sc))
        return out

    # ------------------------------------------------------------------------------------------- pages

    def box_views(self, pages: Sequence[PageOcr]) -> tuple[list[PageOcr], list[PageOcr]]:
        """Detector pages as the SER/RE programs read them (boxes tightened by :attr:`ocr_box_margin`) and as
        the entities and RE's geometry get them (by :attr:`entity_box_margin`), in order (:func:`tighten_boxes`)."""
        read = [tighten_boxes(page, self.ocr_box_margin) for page in pages]
        if self.entity_box_margin == self.ocr_box_margin:
            return read, read
        return read, [tighten_boxes(page, self.entity_box_margin) for page in pages]

    def __call__(self, pages: Sequence[PageOcr], images: Sequence[np.ndarray | None] | None = None, *,
                 ocr_boxes: bool = True) -> list[PageKie]:
        """Runs SER (and RE) over pages.

        Args:
            pages: OCR pages, lines in reading order.
            images: per page, its RGB uint8 image (any size, or the 224x224 ``models.page_image.kie_thumbnail``);
                required when :attr:`needs_image` (LayoutXLM with its visual backbone), ignored otherwise.
            ocr_boxes: the boxes come from the text detector, so they are tightened first (:meth:`box_views`);
                False for pages whose boxes are annotated (gold) ones.

        Returns:
            One :class:`schemas.records.PageKie` per page, in order.

        Raises:
            ValueError: the models need page images and some page has none.
        """
        t0 = time.perf_counter()
        read, boxed = self.box_views(pages) if ocr_boxes else (pages, pages)
        all_toks = self.tokens(read, images)
        ser_ms = (time.perf_counter() - t0) * 1000 / max(len(pages), 1)
        results = []
        for page, page_boxes, toks in zip(read, boxed, all_toks):
            names, scores, ents = self.entities(page, toks, boxes=page_boxes)
            t1 = time.perf_counter()
            links = self.relate(page, toks, ents)
            re_ms = (time.perf_counter() - t1) * 1000
            entities = tuple(Entity(entity_id=j, label=e.label, text=e.text, box=e.box, score=e.score,
                                    line_ids=e.lines) for j, e in enumerate(ents))
            pairs = tuple(KeyValuePair(question_id=q, answer_id=a, score=s) for q, a, s in links)
            results.append(PageKie(line_labels=tuple(names), line_scores=tuple(scores), entities=entities,
                                   pairs=pairs, windows=len(toks.windows), ser_ms=ser_ms, re_ms=re_ms))
        return results
