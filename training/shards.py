"""Label shards: read, validate, write and convert PaddleOCR KIE label files; build manifests.

A shard line is ``name<TAB>[{"transcription", "label", "points", "id", "linking"}, ...]`` (PaddleOCR's
``doc/doc_en/kie_en.md`` format). Reading validates every document and never crashes on bad data:

* whole-shard errors raise :class:`schemas.manifest.ManifestError`: missing file, checksum mismatch;
* a bad document is **skipped** and reported with its line number: malformed line or JSON (JSON nested too
  deeply included), an empty annotation list, unknown label, ``transcription`` that is not a string (``null``),
  an ``id`` or ``linking`` entry that is not an integer, duplicate line ids, dangling linking id (a link naming
  an id not in the document), missing ``points`` or a coordinate that is not a finite number (``1e999``), a box
  outside the image when the page size is known, unknown page size;
* a line with an empty transcription is **dropped** (with the links that touch it, as PaddleOCR's
  ``filter_empty_contents``) and reported.

Every skip is a :class:`Skip` (``uri``, ``line_no``, ``document``, ``reason``). URIs are opened with fsspec, so
``gs://`` works wherever gcsfs is configured.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import reprlib
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import fsspec

from models.reading_order import order_by_tbyx, order_lines
from schemas.annotations import KieDocument, KieLine
from schemas.manifest import Manifest, ManifestError, ShardEntry

__all__ = ["Skip", "check_skipped", "read_shard", "load_split", "write_shard", "shard_entry",
           "build_manifest", "load_manifest", "xfund_release_to_documents", "xfun_normalize_to_documents",
           "funsd_to_documents",
           "sha256_uri"]


@dataclass(frozen=True)
class Skip:
    """Something left out while reading a shard, and why.

    Attributes:
        uri / line_no / document: where: the shard, its 1-based line, the image name on that line.
        reason: what is wrong.
        kind: ``document`` (the whole document was skipped) or ``line`` (one annotation line was dropped).
    """

    uri: str
    line_no: int
    document: str
    reason: str
    kind: str = "document"

    def __str__(self) -> str:
        return f"{self.uri}:{self.line_no} [{self.document}] {self.reason}"


def check_skipped(split: str, documents: int, skips: Sequence[Skip], max_fraction: float,
                  report: str | None = None, *, echo: bool = True) -> float:
    """Prints how many documents of a split were skipped and refuses a split that lost too many.

    Args:
        split: the split's name (for messages).
        documents: documents read from the split.
        skips: its skips (document and line skips; only document skips count).
        max_fraction: the largest acceptable fraction of skipped documents.
        report: where every skip is listed (named in the messages).
        echo: print the count and the first skips to stderr.

    Returns:
        The skipped fraction.

    Raises:
        ValueError: more than ``max_fraction`` of the split's documents were skipped.
    """
    import sys

    dropped = [s for s in skips if s.kind == "document"]
    total = documents + len(dropped)
    fraction = len(dropped) / total if total else 0.0
    where = f": every one in {report}" if report else ""
    if echo and skips:
        print(f"{split}: {len(dropped)} of {total} documents skipped ({fraction:.1%}), "
              f"{len(skips) - len(dropped)} lines dropped{where}", file=sys.stderr)
        for s in skips[:5]:
            print(f"  {s}", file=sys.stderr)
        if len(skips) > 5:
            print(f"  ... {len(skips) - 5} more", file=sys.stderr)
    if fraction > max_fraction:
        raise ValueError(f"{len(dropped)} of {total} {split} documents were skipped ({fraction:.1%}), more than "
                         f"--max_skipped_fraction {max_fraction:g}{where}; first: {dropped[0]}")
    return fraction


def sha256_uri(uri: str) -> str:
    """Returns the hex sha256 of a local or remote file.

    Args:
        uri: path or ``gs://`` URI.

    Returns:
        64 hex digits.
    """
    h = hashlib.sha256()
    try:
        with fsspec.open(uri, "rb") as f:
            while block := f.read(1 << 20):
                h.update(block)
    except FileNotFoundError as e:
        raise ManifestError(f"shard file {uri} not found") from e
    return h.hexdigest()


def _read_text(uri: str) -> str:
    try:
        with fsspec.open(uri, "r", encoding="utf-8") as f:
            return f.read()
    except FileNotFoundError as e:
        raise ManifestError(f"file {uri} not found") from e


def _image_size(image_dir: str, name: str) -> tuple[int, int] | None:
    from PIL import Image

    try:
        with fsspec.open(f"{image_dir.rstrip('/')}/{name}", "rb") as f, Image.open(f) as im:
            return im.size
    except (FileNotFoundError, OSError):
        return None


def _short(value: object) -> str:
    """A bounded repr for messages (a hostile value may be huge or deeply nested)."""
    return reprlib.repr(value)


def _number(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _integer(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _parse_line(item: object, labels: set[str]) -> KieLine:
    """Validates one annotation; raises ValueError naming the line id and what is wrong."""
    if not isinstance(item, dict):
        raise ValueError(f"annotation must be an object, got {type(item).__name__}")
    line_id = item.get("id", -1)
    if not _integer(line_id):
        raise ValueError(f"line id {_short(line_id)}: 'id' must be an integer")
    text = item.get("transcription", "")  # absent: an empty line, dropped and reported below
    if not isinstance(text, str):
        raise ValueError(f"line id {line_id}: 'transcription' must be a string, got "
                         f"{'null' if text is None else type(text).__name__}")
    raw_label = item.get("label", "")
    label = raw_label.strip().upper() if isinstance(raw_label, str) else None
    if label not in labels:
        raise ValueError(f"unknown label {_short(raw_label)} (line id {line_id}), expected one of {sorted(labels)}")
    pts = item.get("points")
    if not isinstance(pts, list) or len(pts) < 4 or not all(isinstance(p, list) and len(p) == 2 for p in pts):
        raise ValueError(f"line id {line_id}: 'points' must be a list of >= 4 [x, y] points, got {_short(pts)}")
    bad = [v for p in pts for v in p if not _number(v)]
    if bad:
        raise ValueError(f"line id {line_id}: point coordinate {_short(bad[0])} is not a finite number")
    links = item.get("linking", []) or []
    if not isinstance(links, list) or not all(isinstance(lk, list) and len(lk) == 2 and all(map(_integer, lk))
                                              for lk in links):
        raise ValueError(f"line id {line_id}: 'linking' must be a list of [id, id] integer pairs, got "
                         f"{_short(links)}")
    xs, ys = [float(p[0]) for p in pts], [float(p[1]) for p in pts]
    return KieLine(text=text, label=label, points=tuple((float(x), float(y)) for x, y in pts),
                   box=(int(min(xs)), int(min(ys)), int(max(xs)), int(max(ys))),
                   line_id=line_id, linking=tuple((a, b) for a, b in links))


def _parse_document(raw: str, labels: set[str], size_of: dict[str, tuple[int, int]], image_dir: str | None,
                    page_size: tuple[int, int] | None, uri: str, line_no: int,
                    skips: list[Skip]) -> KieDocument:
    """Parses one label-file line; raises ValueError (the reason) for a document to skip."""
    if "\t" not in raw:
        raise ValueError("expected 'name<TAB>[json list]'")
    name, payload = raw.split("\t", 1)
    try:
        items = json.loads(payload)
    except json.JSONDecodeError as e:
        raise ValueError(f"bad JSON: {e}") from e
    except RecursionError as e:  # e.g. [[[[...]]]] 200,000 deep: json's decoder gives up cleanly
        raise ValueError("bad JSON: nested too deeply") from e
    if isinstance(items, dict) and "ocr_info" in items:
        items = items["ocr_info"]
    if not isinstance(items, list):
        raise ValueError("the annotation must be a JSON list")
    if not items:
        raise ValueError("the annotation list is empty (a document needs at least one line)")
    lines = [_parse_line(it, labels) for it in items]
    ids = [ln.line_id for ln in lines if ln.line_id != -1]  # -1: no id given (a line nothing links to)
    dup = sorted(i for i, n in Counter(ids).items() if n > 1)
    if dup:
        raise ValueError(f"duplicate line ids {dup[:10]}: every line id must be unique in its document")
    known = set(ids)
    for ln in lines:
        for a, b in ln.linking:
            if a not in known or b not in known:
                raise ValueError(f"dangling linking id: line id {ln.line_id} links [{a}, {b}] but id "
                                 f"{a if a not in known else b} is not in the document")
    size = size_of.get(name) or (image_dir and _image_size(image_dir, name)) or page_size
    if not size:
        raise ValueError("page size unknown: give the shard a sizes file, an image_dir holding the image, "
                         "or a page_size")
    width, height = int(size[0]), int(size[1])
    for ln in lines:
        x0, y0, x1, y1 = ln.box
        if x0 < 0 or y0 < 0 or x1 > width or y1 > height:
            raise ValueError(f"box {list(ln.box)} of line id {ln.line_id} lies outside the {width}x{height} image")
    empty = {ln.line_id for ln in lines if not ln.text.strip()}
    for ln in lines:
        if ln.line_id in empty:
            skips.append(Skip(uri, line_no, name, f"empty transcription: line id {ln.line_id} dropped", "line"))
    # sort all lines, then drop the empty ones: PaddleOCR's order (models.reading_order.order_lines)
    lines = [lines[i] for i in order_lines([ln.box for ln in lines], keep=[ln.line_id not in empty for ln in lines])]
    if empty:
        lines = [KieLine(ln.text, ln.label, ln.points, ln.box, ln.line_id,
                         tuple(lk for lk in ln.linking if lk[0] not in empty and lk[1] not in empty))
                 for ln in lines]
    return KieDocument(name=name, lines=tuple(lines), width=width, height=height)


def read_shard(uri: str, labels: Sequence[str], *, sha256: str | None = None, image_dir: str | None = None,
               page_size: tuple[int, int] | None = None, sizes_uri: str | None = None,
               strict: bool = False) -> tuple[list[KieDocument], list[Skip]]:
    """Reads and validates one label shard.

    Args:
        uri: the label file.
        labels: allowed class names (case-insensitive).
        sha256: expected checksum of the file; checked first when given.
        image_dir / page_size / sizes_uri: where page sizes come from (see ``schemas.manifest``).
        strict: raise on the first skipped document instead of reporting it.

    Returns:
        ``(documents, skips)``.

    Raises:
        ManifestError: missing file, checksum mismatch, or (strict) any skip.
    """
    if sha256 is not None:
        actual = sha256_uri(uri)
        if actual != sha256:
            raise ManifestError(f"checksum mismatch for shard {uri}: manifest says {sha256}, file is {actual}")
    text = _read_text(uri)
    size_of = {k: tuple(v) for k, v in json.loads(_read_text(sizes_uri)).items()} if sizes_uri else {}
    allowed = {x.strip().upper() for x in labels}
    docs: list[KieDocument] = []
    skips: list[Skip] = []
    for line_no, raw in enumerate(text.splitlines(), 1):
        if not raw.strip():
            continue
        try:
            docs.append(_parse_document(raw.rstrip("\r\n"), allowed, size_of, image_dir, page_size, uri, line_no,
                                        skips))
        except (ValueError, TypeError, KeyError, OverflowError, RecursionError) as e:  # never a crash
            skip = Skip(uri, line_no, raw.split("\t", 1)[0][:80], f"document skipped: {e}")
            if strict:
                raise ManifestError(str(skip)) from e
            skips.append(skip)
    return docs, skips


def _resolve(base: str, uri: str | None) -> str | None:
    if uri is None or "://" in uri or os.path.isabs(uri):
        return uri
    return os.path.join(os.path.dirname(base), uri)


def load_manifest(uri: str) -> Manifest:
    """Reads a manifest (JSON or YAML) and makes its relative shard URIs relative to the manifest's folder.

    Args:
        uri: manifest path or ``gs://`` URI.

    Returns:
        The validated manifest.
    """
    from schemas.manifest import parse_manifest

    m = parse_manifest(_read_text(uri), source=uri)
    shards = tuple(ShardEntry(uri=_resolve(uri, s.uri), split=s.split, documents=s.documents, sha256=s.sha256,
                              image_dir=_resolve(uri, s.image_dir), page_size=s.page_size,
                              sizes_uri=_resolve(uri, s.sizes_uri)) for s in m.shards)
    return Manifest(labels=m.labels, shards=shards, version=m.version)


def load_split(manifest: Manifest, split: str, *, strict: bool = False) -> tuple[list[KieDocument], list[Skip]]:
    """Reads every shard of one split (checksums verified).

    Args:
        manifest: the manifest.
        split: ``train``, ``val`` or ``test``.
        strict: raise instead of skipping bad documents.

    Returns:
        ``(documents, skips)`` over all shards of the split.
    """
    docs: list[KieDocument] = []
    skips: list[Skip] = []
    for s in manifest.split(split):
        d, k = read_shard(s.uri, manifest.labels, sha256=s.sha256, image_dir=s.image_dir, page_size=s.page_size,
                          sizes_uri=s.sizes_uri, strict=strict)
        docs += d
        skips += k
    return docs, skips


def write_shard(documents: Iterable[KieDocument], uri: str, *, sizes_uri: str | None = None) -> int:
    """Writes documents as a PaddleOCR KIE label file (labels lower-case, as XFUND).

    Args:
        documents: the documents.
        uri: output label file.
        sizes_uri: optional output JSON ``{name: [width, height]}``.

    Returns:
        The number of documents written.
    """
    docs = list(documents)
    with fsspec.open(uri, "w", encoding="utf-8") as f:
        for d in docs:
            items = [{"transcription": ln.text, "label": ln.label.lower(), "points": [list(p) for p in ln.points],
                      "id": ln.line_id, "linking": [list(lk) for lk in ln.linking]} for ln in d.lines]
            f.write(d.name + "\t" + json.dumps(items, ensure_ascii=False) + "\n")
    if sizes_uri:
        with fsspec.open(sizes_uri, "w") as f:
            json.dump({d.name: [d.width, d.height] for d in docs}, f)
    return len(docs)


def shard_entry(uri: str, split: str, **kwargs: object) -> ShardEntry:
    """Builds a manifest entry for a shard file (counts its documents and hashes it).

    Args:
        uri: the label file.
        split: its split.
        **kwargs: ``image_dir``, ``page_size``, ``sizes_uri``.

    Returns:
        The entry.
    """
    n = sum(1 for raw in _read_text(uri).splitlines() if raw.strip())
    return ShardEntry(uri=uri, split=split, documents=n, sha256=sha256_uri(uri), **kwargs)


def build_manifest(entries: Sequence[ShardEntry], labels: Sequence[str]) -> Manifest:
    """Builds a manifest from shard entries.

    Args:
        entries: shard entries (see :func:`shard_entry`).
        labels: the class list.

    Returns:
        The manifest.
    """
    return Manifest(labels=tuple(labels), shards=tuple(entries))


def _rect(b: Sequence[float]) -> tuple[tuple[float, float], ...]:
    x0, y0, x1, y1 = (float(v) for v in b)
    return ((x0, y0), (x1, y0), (x1, y1), (x0, y1))


def xfund_release_to_documents(uri: str) -> list[KieDocument]:
    """Converts an XFUND release JSON (``{"documents": [{"document": [...], "img": {...}}]}``) to documents.

    As PaddleOCR's ``trans_xfun_data.py``: one line per XFUND entity, ``points`` = the box's 4 corners.

    Args:
        uri: the release JSON (e.g. ``de.train.json``).

    Returns:
        Documents with page sizes from ``img.width/height``, in tb-yx order.
    """
    data = json.loads(_read_text(uri))
    out = []
    for doc in data["documents"]:
        lines = [KieLine(text=e["text"], label=e["label"].upper(), points=_rect(e["box"]),
                         box=tuple(int(v) for v in e["box"]), line_id=int(e["id"]),
                         linking=tuple((int(a), int(b)) for a, b in e.get("linking", [])))
                 for e in doc["document"]]
        order = order_by_tbyx([ln.box for ln in lines])
        out.append(KieDocument(doc["img"]["fname"], tuple(lines[i] for i in order),
                               int(doc["img"]["width"]), int(doc["img"]["height"])))
    return out


def xfun_normalize_to_documents(uri: str) -> list[KieDocument]:
    """Converts PaddleOCR's legacy ``xfun_normalize_*.json`` (``NAME<TAB>{"height", "width", "ocr_info": [...]}``).

    Each ``ocr_info`` item (``text``, ``label``, ``bbox``, ``id``, ``linking``) becomes one line whose ``points`` are
    the box's 4 corners, as :func:`xfund_release_to_documents`.

    Args:
        uri: the legacy label file (e.g. ``xfun_normalize_val.json``, XFUND fr).

    Returns:
        Documents with the page sizes of the file, in tb-yx order.
    """
    out = []
    for raw in _read_text(uri).splitlines():
        if not raw.strip():
            continue
        name, payload = raw.split("\t", 1)
        doc = json.loads(payload)
        lines = [KieLine(text=str(e.get("text") or ""), label=str(e["label"]).upper(), points=_rect(e["bbox"]),
                         box=tuple(int(v) for v in e["bbox"]), line_id=int(e["id"]),
                         linking=tuple((int(a), int(b)) for a, b in e.get("linking", [])))
                 for e in doc["ocr_info"]]
        order = order_by_tbyx([ln.box for ln in lines])
        out.append(KieDocument(name, tuple(lines[i] for i in order), int(doc["width"]), int(doc["height"])))
    return out


def _empty_keys_as_other(form: list[dict]) -> list[dict]:
    """FUNSD entities with each question that links to no answer and no other question relabelled ``other``."""
    label = {e["id"]: e["label"] for e in form}
    filled = {i for e in form for a, b in e.get("linking", []) for i, j in ((a, b), (b, a))
              if label.get(i) == "question" and label.get(j) in ("answer", "question")}
    return [{**e, "label": "other"} if e["label"] == "question" and e["id"] not in filled else e for e in form]


def funsd_to_documents(annotation_dir: str, image_dir: str | None = None, *,
                       xfund_labels: bool = False) -> list[KieDocument]:
    """Converts FUNSD annotations to documents split into visual lines, as PaddleOCR's ``trans_funsd_label.py``.

    A new line starts where a word begins at least 10 px left of the previous word's right edge; each line gets
    a new id and every entity link expands to all (line, line) pairs of its two entities.

    FUNSD and XFUND label a key whose field is empty differently: FUNSD calls it a question (1,125 of FUNSD train's
    3,266 questions link to no answer and no other question), XFUND calls it OTHER (1 of XFUND zh train's 3,692
    questions, 0 of XFUND de train's 2,609). ``xfund_labels`` relabels such FUNSD questions OTHER, so that a model
    trained on both learns one convention.

    Args:
        annotation_dir: folder of FUNSD ``*.json`` annotations.
        image_dir: the matching ``images/`` folder (page sizes); defaults to ``../images``.
        xfund_labels: a question that links to no answer and no other question becomes OTHER.

    Returns:
        Documents (image name ``<stem>.png``) in tb-yx order.
    """
    fs, root = fsspec.core.url_to_fs(annotation_dir)
    image_dir = image_dir or os.path.join(os.path.dirname(annotation_dir.rstrip("/")), "images")
    out = []
    for path in sorted(fs.glob(f"{root.rstrip('/')}/*.json")):
        with fs.open(path, "r") as f:
            form = json.load(f)["form"]
        if xfund_labels:
            form = _empty_keys_as_other(form)
        pieces: list[tuple[str, str, list[list[float]], list[int]]] = []  # text, label, boxes, old linking ids
        new_ids: dict[int, list[int]] = {}
        raw_links: list[list[list[int]]] = []
        for ent in form:
            words = [w for w in ent.get("words", []) if w.get("text") is not None]
            if ent.get("text") is None or not words:
                continue
            groups: list[list[dict]] = [[words[0]]]
            for prev, w in zip(words, words[1:]):
                if w["box"][0] + 10 <= prev["box"][2]:
                    groups.append([w])
                else:
                    groups[-1].append(w)
            for g in groups:
                text = " ".join(w["text"] for w in g)
                if not text.strip():
                    continue
                new_ids.setdefault(ent["id"], []).append(len(pieces))
                bx = [w["box"] for w in g]
                pieces.append((text, ent["label"], [min(b[0] for b in bx), min(b[1] for b in bx),
                                                    max(b[2] for b in bx), max(b[3] for b in bx)], ent["id"]))
                raw_links.append(ent.get("linking", []))
        lines = []
        for i, ((text, label, box, _), links) in enumerate(zip(pieces, raw_links)):
            expanded = tuple((s, d) for a, b in links if a in new_ids and b in new_ids
                             for s in new_ids[a] for d in new_ids[b])
            lines.append(KieLine(text, label.upper(), _rect(box), tuple(int(v) for v in box), i, expanded))
        name = os.path.basename(path)[:-5] + ".png"
        size = _image_size(image_dir, name) or (max([ln.box[2] for ln in lines] + [1]),
                                                max([ln.box[3] for ln in lines] + [1]))
        order = order_by_tbyx([ln.box for ln in lines])
        out.append(KieDocument(name, tuple(lines[i] for i in order), int(size[0]), int(size[1])))
    return out
