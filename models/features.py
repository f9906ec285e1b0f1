"""LayoutXLM input features: the ONE place where text lines become model inputs, for training and inference.

Pure numpy plus a tokenizer (anything with PaddleNLP's ``tokenize`` and ``convert_tokens_to_ids``); no Paddle.

What a window holds (PaddleOCR's ``VQATokenLabelEncode`` + ``VQATokenPad``, VI-LayoutXLM settings):

* each line is tokenised on its own, without ``<s>``/``</s>`` (PaddleOCR strips them), so every line starts with
  sentencepiece's "▁" piece;
* every token carries its **line's** box, scaled to LayoutXLM's grid as ``int(x * 1000 / W)``,
  ``int(y * 1000 / H)`` (truncation, as PaddleOCR); a scaled value outside 0..1000 raises ``ValueError``
  (PaddleOCR crashes above 1023 and silently accepts 1001..1023; pass ``clip=True`` to clip pixel boxes to
  the page first);
* padding to ``max_len`` with id 1 (``<pad>``), box ``[0, 0, 0, 0]``, attention mask 0, label -100;
* BIO labels on all sub-tokens: ``B-X`` on a line's first token and ``I-X`` on the rest, ``O`` for
  OTHER/OTHERS/IGNORE lines;
* lines must arrive in reading order (``models.reading_order.order_by_tbyx``); a line whose text gives no token
  (empty or whitespace-only) is skipped and gets no span (PaddleOCR skips it too).

Long documents. PaddleOCR keeps only the first 512 tokens and predicts ``O`` for the rest. We keep everything
with this **windowing rule**: lines are packed greedily, in order, into windows of at most ``max_len`` tokens;
a line that does not fit in the current window starts the next one, so a line is never cut between windows.
Only a line longer than ``max_len`` tokens on its own is cut: it starts a fresh window and is split into
``max_len``-token chunks (the last chunk may share its window with the following lines). A document of at most
``max_len`` tokens gives exactly one window, identical to PaddleOCR's input. Windows are independent model
inputs; nothing attends across them, and RE pairs exist only within one window.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from models.linker import link_by_rule

__all__ = [
    "XFUND_CLASSES", "RE_ENTITY_LABELS", "IGNORE_INDEX", "PAD_TOKEN_ID",
    "bio_labels", "normalize_box", "tokenize_lines", "Window", "build_windows", "ReInputs", "build_re_inputs",
    "entity_re_inputs", "MODEL_INPUTS", "RE_INPUTS", "batch_windows", "PAIR_FEATURES", "pair_features",
]

XFUND_CLASSES = ("OTHER", "QUESTION", "ANSWER", "HEADER")
"""The lines of PaddleOCR's ``class_list_xfun.txt``, in order."""

RE_ENTITY_LABELS = {"HEADER": 0, "QUESTION": 1, "ANSWER": 2}
"""Entity label ids of the RE head (PaddleOCR's fixed ``entities_labels``)."""

IGNORE_INDEX = -100
PAD_TOKEN_ID = 1
_OTHER_NAMES = frozenset({"O", "OTHER", "OTHERS", "IGNORE"})


def bio_labels(classes: Sequence[str]) -> list[str]:
    """BIO label list from a class list, as PaddleOCR's ``load_vqa_bio_label_maps``.

    Args:
        classes: class names, e.g. :data:`XFUND_CLASSES`; OTHER/OTHERS/IGNORE (any case) are dropped.

    Returns:
        ``["O", "B-X", "I-X", ...]`` upper-case, in class order; the index is the label id.

    >>> bio_labels(XFUND_CLASSES)
    ['O', 'B-QUESTION', 'I-QUESTION', 'B-ANSWER', 'I-ANSWER', 'B-HEADER', 'I-HEADER']
    """
    out = ["O"]
    for c in classes:
        name = c.strip().upper()
        if not name:
            raise ValueError(f"empty class name in {list(classes)!r}")
        if name in _OTHER_NAMES:
            continue
        if f"B-{name}" in out:
            raise ValueError(f"class {c!r} appears twice in {list(classes)!r}")
        out += [f"B-{name}", f"I-{name}"]
    return out


def normalize_box(box: Sequence[float], width: int, height: int, *, clip: bool = False) -> tuple[int, int, int, int]:
    """Scales a pixel box ``(x0, y0, x1, y1)`` to LayoutXLM's 0..1000 grid (``int(x * 1000 / W)``).

    Args:
        box: pixel box, ``x0 <= x1``, ``y0 <= y1``.
        width: page width in pixels (> 0).
        height: page height in pixels (> 0).
        clip: clip the pixel box to the page before scaling instead of raising.

    Returns:
        The scaled box as Python ints.

    Raises:
        ValueError: a non-positive page size, an inverted box, or a scaled value outside 0..1000.

    >>> normalize_box((124, 351, 2480, 3508), 2480, 3508)
    (50, 100, 1000, 1000)
    """
    if width <= 0 or height <= 0:
        raise ValueError(f"page size {width}x{height} must be positive")
    x0, y0, x1, y1 = (float(v) for v in box)
    if clip:
        x0, x1 = min(max(x0, 0.0), width), min(max(x1, 0.0), width)
        y0, y1 = min(max(y0, 0.0), height), min(max(y1, 0.0), height)
    if x1 < x0 or y1 < y0:
        raise ValueError(f"box {tuple(box)} is inverted: expected x0 <= x1 and y0 <= y1")
    out = (int(x0 * 1000 / width), int(y0 * 1000 / height), int(x1 * 1000 / width), int(y1 * 1000 / height))
    if min(out) < 0 or max(out) > 1000:
        raise ValueError(f"box {tuple(box)} on a {width}x{height} page scales to {out}, outside 0..1000 "
                         f"(the box leaves the page; pass clip=True to clip it)")
    return out


def tokenize_lines(texts: Sequence[str], tokenizer) -> list[list[int]]:  # noqa: ANN001 (duck-typed tokenizer)
    """Token ids of each line, tokenised alone, without special tokens (PaddleOCR's per-line encoding).

    Args:
        texts: line texts.
        tokenizer: a ``LayoutXLMTokenizer`` (``tokenize`` + ``convert_tokens_to_ids``).

    Returns:
        One id list per line (empty for a line that gives no token).
    """
    return [list(tokenizer.convert_tokens_to_ids(tokenizer.tokenize(t))) if t else [] for t in texts]


@dataclass(frozen=True, eq=False)
class Window:
    """One model input of ``max_len`` tokens (arrays are numpy int64).

    Attributes:
        input_ids: ``(L,)`` token ids, padded with 1.
        bbox: ``(L, 4)`` boxes on the 0..1000 grid, padding ``[0, 0, 0, 0]``.
        attention_mask: ``(L,)`` 1 on tokens, 0 on padding.
        token_type_ids: ``(L,)`` zeros.
        labels: ``(L,)`` BIO label ids, -100 on padding; None without line labels.
        line_ids: page line indices present in this window, in order.
        line_spans: token ``[start, end)`` of each of those lines in this window.
    """

    input_ids: np.ndarray
    bbox: np.ndarray
    attention_mask: np.ndarray
    token_type_ids: np.ndarray
    labels: np.ndarray | None
    line_ids: tuple[int, ...]
    line_spans: tuple[tuple[int, int], ...]

    @property
    def num_tokens(self) -> int:
        """Number of real (non-padding) tokens."""
        return int(self.attention_mask.sum())


def line_label_ids(line_labels: Sequence[str | None], label2id: Mapping[str, int]) -> list[tuple[int, int]]:
    """``(B id, I id)`` per line label; the ``O`` id twice for O-like labels (OTHER, None...)."""
    out = []
    for k, lab in enumerate(line_labels):
        name = "O" if lab is None else str(lab).strip().upper()
        if name in _OTHER_NAMES or name == "":
            out.append((label2id.get("O", 0), label2id.get("O", 0)))
            continue
        if f"B-{name}" not in label2id or f"I-{name}" not in label2id:
            raise ValueError(f"line {k} has label {lab!r}, which is not in the label map {sorted(label2id)}")
        out.append((label2id[f"B-{name}"], label2id[f"I-{name}"]))
    return out


def build_windows(texts: Sequence[str], boxes: Sequence[Sequence[float]], width: int, height: int,
                  tokenizer, *, line_labels: Sequence[str | None] | None = None,  # noqa: ANN001
                  label2id: Mapping[str, int] | None = None, max_len: int = 512, clip: bool = False,
                  token_ids: Sequence[Sequence[int]] | None = None,
                  token_label_ids: Sequence[Sequence[int] | None] | None = None) -> list[Window]:
    """Builds the model windows of one page (see the module docstring for the windowing rule).

    Args:
        texts: line texts, in reading order.
        boxes: pixel boxes ``(x0, y0, x1, y1)`` of the lines.
        width: page width in pixels.
        height: page height in pixels.
        tokenizer: a ``LayoutXLMTokenizer`` (unused when ``token_ids`` is given).
        line_labels: per-line class names (``QUESTION``, ``answer``, ``OTHER``, None = O) for training.
        label2id: BIO label map; default ``bio_labels(XFUND_CLASSES)``.
        max_len: tokens per window (512 for the published models).
        clip: clip boxes to the page instead of raising on boxes that leave it.
        token_ids: pre-tokenised lines (from :func:`tokenize_lines`), to skip tokenisation.
        token_label_ids: per line, None (labels from ``line_labels``) or one BIO label id per token (a line that
            holds several entities, ``training.augment``); needs ``line_labels``.

    Returns:
        The windows, at least one (a page without tokens gives one all-padding window with no lines).

    Raises:
        ValueError: mismatched lengths, a bad box, an unknown label, or ``max_len < 1``.
    """
    if len(texts) != len(boxes):
        raise ValueError(f"got {len(texts)} texts but {len(boxes)} boxes")
    if line_labels is not None and len(line_labels) != len(texts):
        raise ValueError(f"got {len(texts)} texts but {len(line_labels)} line labels")
    if max_len < 1:
        raise ValueError(f"max_len={max_len} must be positive")
    if token_ids is None:
        token_ids = tokenize_lines(texts, tokenizer)
    elif len(token_ids) != len(texts):
        raise ValueError(f"got {len(texts)} texts but {len(token_ids)} token id lists")
    norm = [normalize_box(b, width, height, clip=clip) for b in boxes]
    lab_ids = None
    if line_labels is not None:
        lab_ids = line_label_ids(line_labels, label2id or {n: i for i, n in enumerate(bio_labels(XFUND_CLASSES))})

    if token_label_ids is not None:
        if lab_ids is None or len(token_label_ids) != len(texts):
            raise ValueError("token_label_ids needs line_labels and one entry per line")
        for k, labs in enumerate(token_label_ids):
            if labs is not None and len(labs) != len(token_ids[k]):
                raise ValueError(f"line {k}: {len(labs)} token labels for {len(token_ids[k])} tokens")

    # Pieces: (line, first token index within the line, token ids); assign pieces to windows.
    windows: list[list[tuple[int, int, list[int]]]] = [[]]
    used = 0
    for k, ids in enumerate(token_ids):
        ids = list(ids)
        if not ids:
            continue
        if len(ids) <= max_len:
            if used + len(ids) > max_len:
                windows.append([])
                used = 0
            windows[-1].append((k, 0, ids))
            used += len(ids)
            continue
        if used:  # an over-long line starts a fresh window and is cut into max_len chunks
            windows.append([])
            used = 0
        for s in range(0, len(ids), max_len):
            if used:
                windows.append([])
                used = 0
            chunk = ids[s:s + max_len]
            windows[-1].append((k, s, chunk))
            used = len(chunk)
    return [_make_window(w, norm, lab_ids, max_len, token_label_ids) for w in windows]


def _make_window(pieces: list[tuple[int, int, list[int]]], norm: list[tuple[int, int, int, int]],
                 lab_ids: list[tuple[int, int]] | None, max_len: int,
                 token_label_ids: Sequence[Sequence[int] | None] | None = None) -> Window:
    input_ids = np.full(max_len, PAD_TOKEN_ID, dtype=np.int64)
    bbox = np.zeros((max_len, 4), dtype=np.int64)
    mask = np.zeros(max_len, dtype=np.int64)
    labels = np.full(max_len, IGNORE_INDEX, dtype=np.int64) if lab_ids is not None else None
    line_ids, spans = [], []
    pos = 0
    for k, first, ids in pieces:
        n = len(ids)
        input_ids[pos:pos + n] = ids
        bbox[pos:pos + n] = norm[k]
        mask[pos:pos + n] = 1
        if labels is not None and token_label_ids is not None and token_label_ids[k] is not None:
            labels[pos:pos + n] = token_label_ids[k][first:first + n]
        elif labels is not None:
            b_id, i_id = lab_ids[k]
            labels[pos:pos + n] = i_id
            if first == 0:  # the continuation chunk of a cut line has no B- token
                labels[pos] = b_id
        line_ids.append(k)
        spans.append((pos, pos + n))
        pos += n
    return Window(input_ids, bbox, mask, np.zeros(max_len, dtype=np.int64), labels, tuple(line_ids), tuple(spans))


@dataclass(frozen=True, eq=False)
class ReInputs:
    """RE inputs of one window (numpy int64).

    Attributes:
        entities: ``(E, 3)`` rows ``(start, end, label)``: token span ``[start, end)`` in the window and the
            label id in :data:`RE_ENTITY_LABELS`.
        entity_line_ids: page line index of each entity.
        pairs: ``(P, 2)`` candidate ``(question entity, answer entity)`` indices, question-major (PaddleOCR's
            meshgrid order).
        pair_labels: ``(P,)`` 1 for gold links, 0 otherwise; None without links.
        boxes: ``(E, 4)`` each entity's box on the 0..1000 grid (the geometric head's input), or None to take
            the box of each entity's first token.
    """

    entities: np.ndarray
    entity_line_ids: tuple[int, ...]
    pairs: np.ndarray
    pair_labels: np.ndarray | None
    boxes: np.ndarray | None = None


def build_re_inputs(window: Window, line_labels: Sequence[str | None],
                    links: Sequence[tuple[int, int]] | None = None) -> ReInputs:
    """Entities, candidate pairs and (optionally) gold pair labels of one window.

    Every line of the window whose label is HEADER, QUESTION or ANSWER (any case) becomes an entity; other
    labels (None, O, OTHER, ...) are not entities. Candidates are all (question, answer) pairs, questions in
    the outer loop, as PaddleNLP's ``build_relation``. Differences from PaddleNLP, on purpose: a window with
    at most 2 entities is scored normally (PaddleNLP replaces them with dummies and predicts nothing), and a
    window without candidates has zero pairs (PaddleNLP scores one dummy pair).

    Args:
        window: a window from :func:`build_windows`.
        line_labels: per **page** line class names (indexed by page line id), e.g. SER predictions.
        links: gold links as pairs of page line ids, in either order (XFUND ``linking``); a link counts when
            one end is a question line and the other an answer line of this window.

    Returns:
        The window's :class:`ReInputs`.

    Raises:
        ValueError: a window line id outside ``line_labels``.
    """
    ents, ent_lines = [], []
    for k, (s, e) in zip(window.line_ids, window.line_spans):
        if k >= len(line_labels):
            raise ValueError(f"window line {k} is outside the {len(line_labels)} line labels")
        lab = line_labels[k]
        name = "" if lab is None else str(lab).strip().upper()
        if name in RE_ENTITY_LABELS:
            ents.append((s, e, RE_ENTITY_LABELS[name]))
            ent_lines.append(k)
    return entity_re_inputs(ents, ent_lines, links=links)


def entity_re_inputs(entities: Sequence[tuple[int, int, int]], entity_line_ids: Sequence[int], *,
                     boxes: Sequence[Sequence[int]] | None = None,
                     links: Sequence[tuple[int, int]] | None = None) -> ReInputs:
    """RE inputs from entities given as token spans (e.g. several entities of one split OCR line).

    Args:
        entities: ``(start, end, label id)`` token spans in the window, label ids of :data:`RE_ENTITY_LABELS`.
        entity_line_ids: an id per entity used to match ``links`` (page line ids, or entity ids).
        boxes: each entity's box on the 0..1000 grid (default: its first token's box).
        links: gold links as pairs of those ids, in either order.

    Returns:
        The :class:`ReInputs` (candidates: every question x answer, question-major).
    """
    ent_lines = [int(k) for k in entity_line_ids]
    entities = np.asarray(entities, dtype=np.int64).reshape(-1, 3)
    q = np.flatnonzero(entities[:, 2] == RE_ENTITY_LABELS["QUESTION"])
    a = np.flatnonzero(entities[:, 2] == RE_ENTITY_LABELS["ANSWER"])
    pairs = np.stack(np.meshgrid(q, a, indexing="ij"), axis=-1).reshape(-1, 2).astype(np.int64)
    pair_labels = None
    if links is not None:
        gold = set()
        for x, y in links:
            gold.add((int(x), int(y)))
            gold.add((int(y), int(x)))
        pair_labels = np.asarray([(ent_lines[i], ent_lines[j]) in gold for i, j in pairs], dtype=np.int64)
    box_arr = None if boxes is None else np.asarray(boxes, dtype=np.int64).reshape(-1, 4)
    return ReInputs(entities, tuple(ent_lines), pairs, pair_labels, box_arr)


MODEL_INPUTS = ("input_ids", "bbox", "attention_mask", "token_type_ids")
"""The backbone's input names, in the exported graphs' order."""

RE_INPUTS = ("entities", "pairs")
"""The RE head's extra inputs after :data:`MODEL_INPUTS` (PaddleOCR layout); the geometric head adds
``pair_features``."""


def batch_windows(windows: Sequence[Window], *, re: Sequence[ReInputs] | None = None, labels: bool = False,
                  geometry: bool = False, feature_names: Sequence[str] | None = None,
                  multiple: int = 64) -> dict[str, np.ndarray]:
    """The ONE batching function: stacks windows (and their RE inputs) into padded model-input arrays.

    The token axis is cut to the longest window's real length rounded up to ``multiple`` (at most the windows'
    length): padding tokens are masked out of attention, so predictions on real tokens are unchanged, and short
    pages cost less (attention is quadratic in the length). ``multiple=0`` keeps the full window length.

    Args:
        windows: windows of one length (``max_len``).
        re: per window its :class:`ReInputs` (adds ``entities (B,E,3)`` and ``pairs (B,P,2)``, padding -1, and
            ``pair_labels (B,P)``, padding -100, when the inputs carry labels).
        labels: add the SER ``labels (B,L)``.
        geometry: add ``pair_features (B,P,F)`` float32 (:func:`pair_features`; needs ``re``).
        feature_names: which pair features (the head's recorded list; default :data:`PAIR_FEATURES`).
        multiple: token-axis rounding (0 = no cut).

    Returns:
        int64 arrays named :data:`MODEL_INPUTS` (+ the optional ones), float32 ``pair_features``.
    """
    if not windows:
        raise ValueError("batch_windows needs at least one window")
    full = len(windows[0].input_ids)
    length = full
    if multiple:
        longest = max(w.num_tokens for w in windows)
        length = min(full, max(multiple, -(-longest // multiple) * multiple))
    batch = {k: np.stack([getattr(w, k)[:length] for w in windows]) for k in MODEL_INPUTS}
    if labels:
        batch["labels"] = np.stack([w.labels[:length] for w in windows])
    if re is None:
        return batch
    n_e = max([len(r.entities) for r in re] + [1])
    n_p = max([len(r.pairs) for r in re] + [1])
    ents = np.full((len(re), n_e, 3), -1, dtype=np.int64)
    pairs = np.full((len(re), n_p, 2), -1, dtype=np.int64)
    for b, r in enumerate(re):
        ents[b, :len(r.entities)] = r.entities
        pairs[b, :len(r.pairs)] = r.pairs
    batch.update(entities=ents, pairs=pairs)
    if any(r.pair_labels is not None for r in re):
        pl = np.full((len(re), n_p), IGNORE_INDEX, dtype=np.int64)
        for b, r in enumerate(re):
            if r.pair_labels is not None:
                pl[b, :len(r.pairs)] = r.pair_labels
        batch["pair_labels"] = pl
    if geometry:
        names = PAIR_FEATURES if feature_names is None else tuple(feature_names)
        feats = np.zeros((len(re), n_p, len(names)), dtype=np.float32)
        for b, (w, r) in enumerate(zip(windows, re)):
            feats[b, :len(r.pairs)] = pair_features(w, r, names)
        batch["pair_features"] = feats
    return batch


PAIR_FEATURES = (
    "dx_gap", "dy_gap", "dx_center", "dy_center", "log_distance", "row_overlap", "col_overlap",
    "right_of", "below", "same_row", "same_col", "q_rank_row", "q_rank_near", "a_rank_near",
    "is_row_nearest", "is_col_nearest", "between", "q_width", "a_width", "height_ratio", "rule_link",
    "row_between_answers", "row_between_questions", "col_between_answers", "col_between_questions",
    "a_has_row_question", "q_has_row_answer",
)
"""The relative geometry of a candidate (question, answer) pair fed to the geometric RE head, in order: the
default of :func:`pair_features`. A trained head records the names it was trained with (its ``metadata.json``
``pair_features``) and gets exactly those, so heads trained on an older list keep loading."""


def _interval_overlap(a0: np.ndarray, a1: np.ndarray, b0: np.ndarray, b1: np.ndarray) -> np.ndarray:
    inter = np.clip(np.minimum(a1, b1) - np.maximum(a0, b0), 0, None)
    shorter = np.maximum(np.minimum(a1 - a0, b1 - b0), 1.0)
    return inter / shorter


def pair_features(window: Window, re: ReInputs, names: Sequence[str] = PAIR_FEATURES) -> np.ndarray:
    """The relative geometry of each candidate pair of a window (``names``, :data:`PAIR_FEATURES` by default),
    ``(P, len(names))`` float32.

    Boxes are the entities' boxes on the 0..1000 grid (every token carries its line's box, so an entity's box is
    its first token's). Distances are in units of the mean height of the two boxes (``h``), signed so that
    positive means "the answer lies right of / below the question". Ranks compare each candidate with the other
    candidates of the same answer (``q_rank_*``) or question (``a_rank_*``) and are given as ``1 / (1 + rank)``.
    ``between`` counts the other entities whose centre lies inside the rectangle spanned by the two boxes.
    ``rule_link`` is 1 where the geometric rule (``models.linker.link_by_rule``, its tuned tolerances, on the grid
    boxes) links the pair. The context features describe the entities around the pair by kind, which a table
    needs (a column header links through a stack of answers, a row key's answer has none between them):
    ``row_between_*`` counts the answers / questions on the answer's row that lie between the question's right
    edge and the answer's left edge, ``col_between_*`` those in the answer's column (x overlap >= half the
    narrower box) whose centre lies between the question's bottom and the answer's top (both ``log1p``);
    ``a_has_row_question`` is 1 when some candidate question lies left of the answer on its row,
    ``q_has_row_answer`` when the question has some candidate answer right of it on its row.

    Args:
        window: the window.
        re: its RE inputs.
        names: which features, in order (each one of :data:`PAIR_FEATURES`).

    Returns:
        ``(P, len(names))`` float32; ``(0, len(names))`` without pairs.
    """
    unknown = [n for n in names if n not in PAIR_FEATURES]
    if unknown:
        raise ValueError(f"unknown pair features {unknown}; known: {list(PAIR_FEATURES)}")
    n_f = len(names)
    if not len(re.pairs):
        return np.zeros((0, n_f), np.float32)
    boxes = (re.boxes if re.boxes is not None else window.bbox[re.entities[:, 0]]).astype(np.float64)  # (E, 4)
    q, a = boxes[re.pairs[:, 0]], boxes[re.pairs[:, 1]]  # (P, 4)
    qh, ah = np.maximum(q[:, 3] - q[:, 1], 1.0), np.maximum(a[:, 3] - a[:, 1], 1.0)
    h = (qh + ah) / 2
    dx_gap = (a[:, 0] - q[:, 2]) / h  # answer's left edge minus question's right edge
    dy_gap = (a[:, 1] - q[:, 3]) / h  # answer's top minus question's bottom
    qc = np.stack([(q[:, 0] + q[:, 2]) / 2, (q[:, 1] + q[:, 3]) / 2], 1)
    ac = np.stack([(a[:, 0] + a[:, 2]) / 2, (a[:, 1] + a[:, 3]) / 2], 1)
    dxc, dyc = (ac[:, 0] - qc[:, 0]) / h, (ac[:, 1] - qc[:, 1]) / h
    # Edge-to-edge distance (0 when the boxes touch or overlap).
    gx = np.maximum(np.maximum(a[:, 0] - q[:, 2], q[:, 0] - a[:, 2]), 0) / h
    gy = np.maximum(np.maximum(a[:, 1] - q[:, 3], q[:, 1] - a[:, 3]), 0) / h
    dist = np.hypot(gx, gy)
    row = _interval_overlap(q[:, 1], q[:, 3], a[:, 1], a[:, 3])
    col = _interval_overlap(q[:, 0], q[:, 2], a[:, 0], a[:, 2])
    right = (dx_gap > -0.5).astype(np.float64)
    below = (dy_gap > -0.3).astype(np.float64)
    same_row = (row >= 0.5).astype(np.float64)
    same_col = (col >= 0.1).astype(np.float64)
    row_key = np.where((same_row > 0) & (right > 0), dx_gap, np.inf)  # the rule's first test
    col_key = np.where((same_col > 0) & (below > 0), dy_gap, np.inf)  # the rule's second test

    def rank(group: np.ndarray, key: np.ndarray) -> np.ndarray:
        """Rank of each pair's key among the pairs of the same group (0 = smallest), inf keys last."""
        out = np.zeros(len(key))
        for g in np.unique(group):
            idx = np.flatnonzero(group == g)
            order = np.argsort(key[idx], kind="stable")
            out[idx[order]] = np.arange(len(idx))
        return out

    q_rank_row = np.where(np.isfinite(row_key), 1 / (1 + rank(re.pairs[:, 1], row_key)), 0.0)
    q_rank_col = np.where(np.isfinite(col_key), 1 / (1 + rank(re.pairs[:, 1], col_key)), 0.0)
    has_row = np.zeros(len(boxes), bool)
    has_row[re.pairs[np.isfinite(row_key), 1]] = True
    rule_col = (q_rank_col == 1) & ~has_row[re.pairs[:, 1]]  # the rule falls back to the column only then
    q_rank_near = 1 / (1 + rank(re.pairs[:, 1], dist))
    a_rank_near = 1 / (1 + rank(re.pairs[:, 0], dist))
    # Entities strictly between the two boxes (centre inside their joint rectangle), the pair's own excluded.
    centres = np.stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2], 1)  # (E, 2)
    lo = np.minimum(qc, ac)
    hi = np.maximum(qc, ac)
    inside = ((centres[None, :, 0] > lo[:, None, 0]) & (centres[None, :, 0] < hi[:, None, 0])
              & (centres[None, :, 1] >= lo[:, None, 1] - 1) & (centres[None, :, 1] <= hi[:, None, 1] + 1))
    idx = np.arange(len(boxes))[None, :]
    others = (idx != re.pairs[:, :1]) & (idx != re.pairs[:, 1:])  # (P, E): every entity but the pair's two
    between = np.log1p((inside & others).sum(1))
    # Context by kind: what lies between the two on the answer's row, and in the answer's column.
    on_row = _interval_overlap(a[:, None, 1], a[:, None, 3], boxes[None, :, 1], boxes[None, :, 3]) >= 0.5
    row_mid = on_row & (centres[None, :, 0] > q[:, None, 2]) & (centres[None, :, 0] < a[:, None, 0]) & others
    in_col = _interval_overlap(a[:, None, 0], a[:, None, 2], boxes[None, :, 0], boxes[None, :, 2]) >= 0.5
    col_mid = in_col & (centres[None, :, 1] > q[:, None, 3]) & (centres[None, :, 1] < a[:, None, 1]) & others
    is_q = (re.entities[:, 2] == RE_ENTITY_LABELS["QUESTION"])[None, :]
    is_a = (re.entities[:, 2] == RE_ENTITY_LABELS["ANSWER"])[None, :]
    q_row = np.zeros(len(boxes), bool)
    q_row[re.pairs[np.isfinite(row_key), 0]] = True
    kinds = ["QUESTION" if k == RE_ENTITY_LABELS["QUESTION"] else "ANSWER" if k == RE_ENTITY_LABELS["ANSWER"]
             else "HEADER" for k in re.entities[:, 2]]
    ruled = set(link_by_rule(boxes.tolist(), kinds))
    rule_link = np.asarray([(int(x), int(y)) in ruled for x, y in re.pairs], np.float64)
    columns = dict(zip(PAIR_FEATURES, (
        np.clip(dx_gap, -20, 20) / 10, np.clip(dy_gap, -20, 20) / 10, np.clip(dxc, -40, 40) / 20,
        np.clip(dyc, -40, 40) / 20, np.log1p(dist), row, col, right, below, same_row, same_col,
        q_rank_row, q_rank_near, a_rank_near, (q_rank_row == 1).astype(np.float64),
        rule_col.astype(np.float64), between,
        (q[:, 2] - q[:, 0]) / 1000, (a[:, 2] - a[:, 0]) / 1000, np.log(qh / ah), rule_link,
        np.log1p((row_mid & is_a).sum(1)), np.log1p((row_mid & is_q).sum(1)), np.log1p((col_mid & is_a).sum(1)),
        np.log1p((col_mid & is_q).sum(1)), has_row[re.pairs[:, 1]].astype(np.float64),
        q_row[re.pairs[:, 0]].astype(np.float64),
    ), strict=True))
    return np.stack([columns[n] for n in names], axis=1).astype(np.float32)
