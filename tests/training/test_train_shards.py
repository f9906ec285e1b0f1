"""Shards and manifests: round trips, converters, and the documented failures and skips."""

from __future__ import annotations

import json

import pytest

from schemas.annotations import KieDocument
from schemas.manifest import Manifest, ManifestError, ShardEntry, parse_manifest
from training import cli
from training.shards import (
    funsd_to_documents,
    load_manifest,
    load_split,
    read_shard,
    shard_entry,
    write_shard,
    xfund_release_to_documents,
)

LABELS = ["OTHER", "QUESTION", "ANSWER", "HEADER"]


def _item(i, text, label, box, linking=()):
    x0, y0, x1, y1 = box
    return {"transcription": text, "label": label, "points": [[x0, y0], [x1, y0], [x1, y1], [x0, y1]], "id": i,
            "linking": [list(x) for x in linking]}


def _good_doc(name="a.jpg"):
    return name + "\t" + json.dumps([_item(0, "Name:", "question", (10, 10, 60, 30), [(0, 1)]),
                                     _item(1, "Ada", "answer", (70, 12, 120, 30), [(0, 1)]),
                                     _item(2, "FORM", "header", (10, 0, 90, 8))])


def _write(tmp_path, lines, name="s.txt"):
    p = tmp_path / name
    p.write_text("\n".join(lines) + "\n")
    return p


def test_train_read_shard_sorts_tbyx_and_links(tmp_path):
    p = _write(tmp_path, [_good_doc()])
    docs, skips = read_shard(str(p), LABELS, page_size=(200, 100))
    assert skips == []
    (doc,) = docs
    assert [ln.text for ln in doc.lines] == ["FORM", "Name:", "Ada"]  # tb-yx: header (y0=0) first
    assert doc.links() == [(1, 2)]
    assert (doc.width, doc.height) == (200, 100)


@pytest.mark.parametrize("bad_line, reason", [
    ("b.jpg\t" + json.dumps([_item(0, "x", "signature", (1, 1, 5, 5))]), "unknown label 'signature'"),
    ("c.jpg\t" + json.dumps([_item(0, "x", "question", (1, 1, 5, 5), [(0, 7)])]), "dangling linking id"),
    ("d.jpg\t" + json.dumps([_item(0, "x", "question", (1, 1, 500, 5))]), "outside the 200x100 image"),
    ("e.jpg\t[not json", "bad JSON"),
    ("no tab here", "expected 'name<TAB>[json list]'"),
])
def test_train_bad_document_is_skipped_with_line_number(tmp_path, bad_line, reason):
    p = _write(tmp_path, [_good_doc(), bad_line])
    docs, skips = read_shard(str(p), LABELS, page_size=(200, 100))
    assert [d.name for d in docs] == ["a.jpg"]
    assert len(skips) == 1 and skips[0].line_no == 2 and reason in skips[0].reason, skips
    with pytest.raises(ManifestError, match=reason.split("'")[0]):
        read_shard(str(p), LABELS, page_size=(200, 100), strict=True)


def test_train_empty_transcription_line_dropped_with_its_links(tmp_path):
    items = [_item(0, "Name:", "question", (10, 10, 60, 30), [(0, 1)]), _item(1, "  ", "answer", (70, 10, 90, 30),
                                                                                [(0, 1)])]
    p = _write(tmp_path, ["a.jpg\t" + json.dumps(items)])
    docs, skips = read_shard(str(p), LABELS, page_size=(200, 100))
    assert [ln.text for ln in docs[0].lines] == ["Name:"] and docs[0].lines[0].linking == ()
    assert len(skips) == 1 and "empty transcription: line id 1 dropped" in str(skips[0]) and skips[0].line_no == 1


def test_train_unknown_page_size_is_skipped(tmp_path):
    p = _write(tmp_path, [_good_doc()])
    docs, skips = read_shard(str(p), LABELS)
    assert docs == [] and "page size unknown" in skips[0].reason


def test_train_manifest_round_trip_checksum_and_missing_file(tmp_path):
    p = _write(tmp_path, [_good_doc("a.jpg"), _good_doc("b.jpg")])
    entry = shard_entry(str(p), "train", page_size=(200, 100))
    assert entry.documents == 2
    m = Manifest(labels=tuple(LABELS), shards=(entry,))
    (tmp_path / "m.json").write_text(m.to_json())
    again = load_manifest(str(tmp_path / "m.json"))
    assert again == m
    docs, _ = load_split(again, "train")
    assert len(docs) == 2
    p.write_text(p.read_text().replace("Ada", "Bob"))
    with pytest.raises(ManifestError, match="checksum mismatch for shard .*s.txt"):
        load_split(again, "train")
    p.unlink()
    with pytest.raises(ManifestError, match="not found"):
        load_split(again, "train")


def test_train_manifest_yaml_relative_and_validation_errors(tmp_path):
    p = _write(tmp_path, [_good_doc()])
    sha = shard_entry(str(p), "val").sha256
    (tmp_path / "m.yaml").write_text(f"labels: [OTHER, QUESTION, ANSWER, HEADER]\nshards:\n"
                                     f"  - {{uri: s.txt, split: val, documents: 1, sha256: {sha}, "
                                     f"page_size: [200, 100]}}\n")
    m = load_manifest(str(tmp_path / "m.yaml"))
    assert m.split("val")[0].uri == str(tmp_path / "s.txt")
    with pytest.raises(ManifestError, match="unknown split 'dev'"):
        ShardEntry(uri="x", split="dev", documents=1, sha256=sha)
    with pytest.raises(ManifestError, match="sha256 must be 64"):
        ShardEntry(uri="x", split="train", documents=1, sha256="abc")
    with pytest.raises(ManifestError, match="duplicates"):
        Manifest(labels=("OTHER", "other"))
    with pytest.raises(ManifestError, match="unknown manifest keys"):
        parse_manifest({"labels": LABELS, "shards": [], "extra": 1})
    with pytest.raises(ManifestError, match=r"shards\[0\] is missing"):
        parse_manifest({"labels": LABELS, "shards": [{"uri": "x"}]})


def test_train_xfund_release_converter_round_trips(shared_data, tmp_path):
    docs = xfund_release_to_documents(str(shared_data / "xfund_de" / "de.val.json"))
    assert len(docs) == 50 and all(isinstance(d, KieDocument) for d in docs)
    out = tmp_path / "de.txt"
    write_shard(docs, str(out), sizes_uri=str(out) + ".sizes.json")
    again, skips = read_shard(str(out), LABELS, sizes_uri=str(out) + ".sizes.json")
    assert skips == [] and [len(d.lines) for d in again] == [len(d.lines) for d in docs]
    assert again[0].links() == docs[0].links() and len(docs[0].links()) > 0


def test_train_funsd_converter_splits_visual_lines(shared_data):
    ann = shared_data / "funsd" / "testing_data" / "annotations"
    docs = funsd_to_documents(str(ann))
    assert len(docs) == 50
    raw = json.loads(sorted(ann.glob("*.json"))[0].read_text())["form"]
    n_entities = sum(1 for e in raw if e.get("words") and e.get("text") is not None)
    assert len(docs[0].lines) >= n_entities  # entities split into one or more visual lines
    assert docs[0].links(), "FUNSD question/answer links survive the id remapping"


def test_train_cli_shards_build_and_validate(tmp_path, capsys):
    p = _write(tmp_path, [_good_doc(), "x.jpg\t" + json.dumps([_item(0, "x", "bogus", (1, 1, 2, 2))])])
    out = tmp_path / "m.json"
    assert cli.main(["shards", "build", "--train", str(p), "--page_size", "200", "100", "--out", str(out)]) == 0
    m = load_manifest(str(out))
    assert m.shards[0].documents == 2 and m.labels == tuple(LABELS)
    assert cli.main(["shards", "validate", str(out)]) == 0
    assert cli.main(["shards", "validate", str(out), "--strict"]) == 1
    assert "unknown label 'bogus'" in capsys.readouterr().out


def test_train_funsd_xfund_labels_make_empty_keys_other(tmp_path, capsys):
    """``convert-funsd --xfund_labels``: a question with no answer and no sub-question (an empty field, linked only
    to its header) becomes OTHER; a question with an answer, or with a sub-question under it, stays QUESTION."""
    def ent(i, label, x, y, text, links=()):
        box = [x, y, x + 80, y + 20]
        return {"id": i, "label": label, "text": text, "box": box, "linking": [list(k) for k in links],
                "words": [{"text": text, "box": box}]}

    form = [ent(0, "header", 10, 10, "FORM", [(0, 1), (0, 2)]),
            ent(1, "question", 10, 50, "Name:", [(0, 1), (1, 3)]), ent(3, "answer", 200, 50, "Ann", [(1, 3)]),
            ent(2, "question", 10, 90, "Date:", [(0, 2)]),  # only its header links to it: an empty field
            ent(4, "question", 10, 130, "Phone", [(4, 5)]), ent(5, "question", 200, 130, "home", [(4, 5), (5, 6)]),
            ent(6, "answer", 400, 130, "555", [(5, 6)]), ent(7, "question", 10, 170, "Sign here")]
    ann = tmp_path / "annotations"
    ann.mkdir()
    (ann / "f.json").write_text(json.dumps({"form": form}))
    labels = {}
    for flag in ([], ["--xfund_labels"]):
        out = tmp_path / f"f{len(flag)}.txt"
        assert cli.main(["shards", "convert-funsd", str(ann), str(out), *flag]) == 0
        (doc,), _ = read_shard(str(out), LABELS, sizes_uri=str(out) + ".sizes.json")
        labels[bool(flag)] = {ln.text: ln.label for ln in doc.lines}
    assert "wrote" in capsys.readouterr().out
    assert labels[False]["Date:"] == labels[False]["Sign here"] == "QUESTION"
    assert labels[True]["Date:"] == labels[True]["Sign here"] == "OTHER"
    kept = ("Name:", "Phone", "home")
    assert [labels[True][k] for k in kept] == ["QUESTION"] * 3 and labels[True]["FORM"] == "HEADER"
    assert {k: v for k, v in labels[True].items() if k not in ("Date:", "Sign here")} == \
        {k: v for k, v in labels[False].items() if k not in ("Date:", "Sign here")}
