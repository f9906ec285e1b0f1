"""Training-data manifest: which label shards make up the train / val / test splits, and their label list.

A *shard* is a PaddleOCR KIE label file (one line per image: ``name<TAB>[{"transcription", "label", "points",
"id", "linking"}, ...]``), optionally with an image folder. A manifest lists shards by URI (local path or
``gs://``) with their split, document count and sha256, so a training run records exactly what it saw.

Example (JSON; YAML with the same keys is accepted too)::

    {"version": 1,
     "labels": ["OTHER", "QUESTION", "ANSWER", "HEADER"],
     "shards": [{"uri": "gs://bucket/xfund/train-000.txt", "split": "train", "documents": 119,
                 "sha256": "9f2c...", "image_dir": "gs://bucket/xfund/image", "page_size": [2480, 3508],
                 "sizes_uri": null}]}

Page sizes (needed to scale boxes to LayoutXLM's 0-1000 grid) come from, in order: the shard's ``sizes_uri``
(JSON ``{image name: [width, height]}``, written by the converters), the image header in ``image_dir``, and the
shard-wide ``page_size``. Framework-free: parsing and validation only; ``training.shards`` does the I/O.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["SPLITS", "MANIFEST_VERSION", "ManifestError", "ShardEntry", "Manifest", "parse_manifest"]

SPLITS = ("train", "val", "test")
MANIFEST_VERSION = 1
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class ManifestError(ValueError):
    """A manifest or shard is invalid; the message names the field or file and the bad value."""


@dataclass(frozen=True)
class ShardEntry:
    """One label shard of a manifest.

    Attributes:
        uri: the label file (local path or ``gs://...``); relative paths are relative to the manifest.
        split: one of ``SPLITS``.
        documents: number of documents (lines) in the file.
        sha256: hex sha256 of the label file (checked before it is read).
        image_dir: optional folder holding the images named in the file.
        page_size: optional ``(width, height)`` in pixels for every page of this shard.
        sizes_uri: optional JSON file ``{image name: [width, height]}``.
    """

    uri: str
    split: str
    documents: int
    sha256: str
    image_dir: str | None = None
    page_size: tuple[int, int] | None = None
    sizes_uri: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.uri, str) or not self.uri:
            raise ManifestError(f"shard uri must be a non-empty string, got {self.uri!r}")
        if self.split not in SPLITS:
            raise ManifestError(f"shard {self.uri}: unknown split {self.split!r}, expected one of {list(SPLITS)}")
        if not isinstance(self.documents, int) or isinstance(self.documents, bool) or self.documents < 0:
            raise ManifestError(f"shard {self.uri}: documents must be an int >= 0, got {self.documents!r}")
        if not isinstance(self.sha256, str) or not _SHA256.match(self.sha256):
            raise ManifestError(f"shard {self.uri}: sha256 must be 64 lowercase hex digits, got {self.sha256!r}")
        if self.page_size is not None:
            size = tuple(self.page_size)
            if len(size) != 2 or not all(isinstance(v, int) and v > 0 for v in size):
                raise ManifestError(f"shard {self.uri}: page_size must be [width, height] > 0, got {self.page_size!r}")
            object.__setattr__(self, "page_size", size)


@dataclass(frozen=True)
class Manifest:
    """A set of shards with their splits and the SER class list (``class_list_xfun.txt`` order).

    Attributes:
        labels: class names, e.g. ``("OTHER", "QUESTION", "ANSWER", "HEADER")``; matched case-insensitively.
        shards: the shards.
        version: schema version (``MANIFEST_VERSION``).
    """

    labels: tuple[str, ...]
    shards: tuple[ShardEntry, ...] = field(default_factory=tuple)
    version: int = MANIFEST_VERSION

    def __post_init__(self) -> None:
        if self.version != MANIFEST_VERSION:
            raise ManifestError(f"unsupported manifest version {self.version!r}, expected {MANIFEST_VERSION}")
        labels = tuple(self.labels)
        if not labels or not all(isinstance(x, str) and x.strip() for x in labels):
            raise ManifestError(f"manifest labels must be a non-empty list of names, got {self.labels!r}")
        upper = [x.strip().upper() for x in labels]
        if len(set(upper)) != len(upper):
            raise ManifestError(f"manifest labels contain duplicates (case-insensitive): {list(labels)}")
        object.__setattr__(self, "labels", labels)
        object.__setattr__(self, "shards", tuple(self.shards))

    def split(self, name: str) -> tuple[ShardEntry, ...]:
        """Returns the shards of one split.

        Args:
            name: one of ``SPLITS``.

        Returns:
            The shards whose split is ``name`` (possibly empty).
        """
        if name not in SPLITS:
            raise ManifestError(f"unknown split {name!r}, expected one of {list(SPLITS)}")
        return tuple(s for s in self.shards if s.split == name)

    def to_dict(self) -> dict[str, Any]:
        """Returns the JSON-ready form (inverse of :func:`parse_manifest`)."""
        return {"version": self.version, "labels": list(self.labels),
                "shards": [{k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(s).items()}
                           for s in self.shards]}

    def to_json(self) -> str:
        """Returns the manifest as indented JSON text."""
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n"


def parse_manifest(data: str | dict[str, Any], *, source: str = "<manifest>") -> Manifest:
    """Parses and validates a manifest.

    Args:
        data: JSON or YAML text, or an already-decoded dict.
        source: name used in error messages (the manifest's URI).

    Returns:
        The validated :class:`Manifest`.

    Raises:
        ManifestError: undecodable text, missing or unknown keys, bad values (the message names them).
    """
    if isinstance(data, str):
        try:
            obj = json.loads(data)
        except json.JSONDecodeError:
            import yaml  # YAML is a superset of JSON; only needed for YAML manifests

            try:
                obj = yaml.safe_load(data)
            except yaml.YAMLError as e:
                raise ManifestError(f"{source}: neither valid JSON nor YAML: {e}") from e
    else:
        obj = data
    if not isinstance(obj, dict):
        raise ManifestError(f"{source}: a manifest must be a mapping, got {type(obj).__name__}")
    unknown = set(obj) - {"version", "labels", "shards"}
    if unknown:
        raise ManifestError(f"{source}: unknown manifest keys {sorted(unknown)}")
    if "labels" not in obj or "shards" not in obj:
        raise ManifestError(f"{source}: a manifest needs 'labels' and 'shards'")
    if not isinstance(obj["shards"], list):
        raise ManifestError(f"{source}: 'shards' must be a list")
    allowed = {"uri", "split", "documents", "sha256", "image_dir", "page_size", "sizes_uri"}
    shards = []
    for i, s in enumerate(obj["shards"]):
        if not isinstance(s, dict):
            raise ManifestError(f"{source}: shards[{i}] must be a mapping")
        bad = set(s) - allowed
        if bad:
            raise ManifestError(f"{source}: shards[{i}] has unknown keys {sorted(bad)}; allowed {sorted(allowed)}")
        missing = {"uri", "split", "documents", "sha256"} - set(s)
        if missing:
            raise ManifestError(f"{source}: shards[{i}] is missing {sorted(missing)}")
        try:
            shards.append(ShardEntry(**s))
        except ManifestError as e:
            raise ManifestError(f"{source}: shards[{i}]: {e}") from e
    try:
        return Manifest(labels=tuple(obj["labels"] or ()), shards=tuple(shards), version=obj.get("version", 1))
    except TypeError as e:
        raise ManifestError(f"{source}: bad manifest: {e}") from e
