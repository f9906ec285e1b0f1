"""training.cells_tuning: the wrapped-cell gap's scores per gap, on a real OCR run and the tiny SER model."""

from __future__ import annotations

import json

import pytest

from training.shards import build_manifest, read_shard, shard_entry, write_shard

LABELS = ["OTHER", "QUESTION", "ANSWER", "HEADER"]


def test_cells_tuning_scores_each_gap_end_to_end_and_on_gold_lines(xfund_zh_train, tiny_kie_dirs, tmp_path, capsys):
    from training.cells_tuning import main

    docs, _ = read_shard(str(xfund_zh_train / "train.json"), LABELS, image_dir=str(xfund_zh_train / "image"))
    docs = [d for d in docs if d.name in {"zh_train_16.jpg", "zh_train_26.jpg"}]
    shard = str(tmp_path / "shard.txt")
    write_shard(docs, shard)
    manifest = tmp_path / "manifest.json"
    manifest.write_text(build_manifest([shard_entry(shard, "test", image_dir=str(xfund_zh_train / "image"))],
                                       LABELS).to_json())
    assert main(["--ser_dir", str(tiny_kie_dirs[0]), "--manifest", str(manifest), "--gaps", "0", "0.3"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["gap"] for r in rows] == [0.0, 0.3]
    for r in rows:
        assert r["documents"] == r["pages_with_images"] == 2
        assert all(0.0 <= r[k] <= 1.0 for k in ("e2e_pairs", "detector_view_pairs", "gold_ocr_pairs", "line_f1"))
        assert sum(r["question_end"].values()) == sum(len(d.links()) for d in docs)  # every gold pair counted once
    with pytest.raises(SystemExit):
        main(["--ser_dir", str(tiny_kie_dirs[0]), "--manifest", str(manifest), "--gaps", "2"])
