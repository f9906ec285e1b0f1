"""Hostile shard lines never crash `shards validate` or `train`: each is reported with its line and reason."""

from __future__ import annotations

import json
import time

from pipelines import cli as kiebeam_cli
from schemas.manifest import ShardEntry
from training.shards import build_manifest, read_shard, sha256_uri

LABELS = ["OTHER", "QUESTION", "ANSWER", "HEADER"]


def _item(i, text="Name", label="question", box=(10, 10, 60, 30), linking=()):
    x0, y0, x1, y1 = box
    return {"transcription": text, "label": label, "points": [[x0, y0], [x1, y0], [x1, y1], [x0, y1]], "id": i,
            "linking": [list(x) for x in linking]}


def _good(name):
    return f"{name}\t" + json.dumps([_item(0, "Name:", "question", (10, 10, 60, 30), [(0, 1)]),
                                     _item(1, "Ada", "answer", (70, 12, 120, 30), [(0, 1)]),
                                     _item(2, "FORM", "header", (10, 0, 90, 8))])


# (shard line, reason the report must give); 1e999 and the deep nesting used to crash with a traceback
BAD = [
    ('inf.jpg\t[{"transcription": "x", "label": "question", "points": [[1e999, 1], [5, 1], [5, 5], [1, 5]], '
     '"id": 0}]', "line id 0: point coordinate inf is not a finite number"),
    ("deep.jpg\t" + "[" * 200_000 + "]" * 200_000, "bad JSON: nested too deeply"),
    ("null.jpg\t" + json.dumps([_item(0, None)]), "line id 0: 'transcription' must be a string, got null"),
    ("empty.jpg\t[]", "the annotation list is empty"),
    ("dup.jpg\t" + json.dumps([_item(1, "Q", "question", linking=[(1, 2)]), _item(1, "A", "answer"),
                               _item(2, "B", "answer", linking=[(1, 2)])]), "duplicate line ids [1]"),
    ("bigid.jpg\t" + json.dumps([_item(0)]).replace('"id": 0', '"id": 1e999'), "'id' must be an integer"),
    ("nan.jpg\t" + json.dumps([_item(0)]).replace("[10, 10]", "[NaN, 10]"), "coordinate nan is not a finite"),
    ("link.jpg\t" + json.dumps([_item(0)]).replace('"linking": []', '"linking": [[0, 1e999]]'),
     "'linking' must be a list of [id, id] integer pairs"),
    ("label.jpg\t" + json.dumps([_item(0)]).replace('"question"', "[" * 50 + "]" * 50),
     "unknown label [[[[[[[...]]]]]]] (line id 0)"),  # a bounded repr of a nested value
]


def _manifest(tmp_path, lines, documents):
    shard = tmp_path / "shard.txt"
    shard.write_text("\n".join(lines) + "\n")
    entries = [ShardEntry(uri=str(shard), split=s, documents=documents, sha256=sha256_uri(str(shard)),
                          page_size=(200, 120)) for s in ("train", "val")]
    path = tmp_path / "manifest.json"
    path.write_text(build_manifest(entries, LABELS).to_json())
    return str(path), str(shard)


def test_every_bad_line_is_reported_with_its_line_number(tmp_path):
    lines = [_good("ok0.jpg")] + [line for line, _ in BAD] + [_good("ok1.jpg")]
    _, shard = _manifest(tmp_path, lines, len(lines))
    t0 = time.perf_counter()
    docs, skips = read_shard(shard, LABELS, page_size=(200, 120))
    assert time.perf_counter() - t0 < 10
    assert [d.name for d in docs] == ["ok0.jpg", "ok1.jpg"]
    assert [(s.line_no, s.kind) for s in skips] == [(n, "document") for n in range(2, 2 + len(BAD))]
    for skip, (line, reason) in zip(skips, BAD):
        assert skip.document == line.split("\t", 1)[0] and reason in skip.reason, (skip, reason)
    assert "dangling" not in skips[4].reason  # duplicate ids used to surface as a misleading dangling link


def test_shards_validate_reports_instead_of_crashing(tmp_path, capsys):
    lines = [_good("ok0.jpg")] + [line for line, _ in BAD]
    manifest, shard = _manifest(tmp_path, lines, len(lines))
    assert kiebeam_cli.main(["shards", "validate", manifest]) == 0
    out = capsys.readouterr().out
    for n, (line, reason) in enumerate(BAD, start=2):
        assert f"{shard}:{n} [{line.split(chr(9), 1)[0]}] document skipped: " in out and reason in out
    assert kiebeam_cli.main(["shards", "validate", "--strict", manifest]) == 1


def test_train_prints_the_skipped_count_and_refuses_above_the_threshold(tmp_path, capsys):
    # 18 documents, 14 of them bad: train used to drop them silently and exit 0
    lines = [_good(f"ok{i}.jpg") for i in range(4)] + [BAD[i % len(BAD)][0] for i in range(14)]
    manifest, _ = _manifest(tmp_path, lines, len(lines))
    args = ["train", "--preset", "tiny_ser", "--manifest", manifest, "--out_dir", str(tmp_path / "run"),
            "--max_steps", "1", "--vocab_size", "40", "--set", "max_len=64", "--set", "progress=false"]
    assert kiebeam_cli.main(args) == 2
    err = capsys.readouterr().err
    assert "train: 14 of 18 documents skipped (77.8%), 0 lines dropped: every one in" in err
    assert err.strip().splitlines()[-1].startswith(
        "kiebeam train: error: 14 of 18 train documents were skipped (77.8%), more than --max_skipped_fraction 0.05")
    assert (tmp_path / "run" / "skipped.txt").read_text().count("\n") == 28  # train and val, a line each
    assert kiebeam_cli.main(args + ["--max_skipped_fraction", "0.8"]) == 0  # explicit: train on the 4 good ones
    assert "train: 14 of 18 documents skipped" in capsys.readouterr().err
    assert kiebeam_cli.main(args + ["--max_skipped_fraction", "1.5"]) == 2
    assert "error: max_skipped_fraction=1.5 must be within [0, 1]" in capsys.readouterr().err
