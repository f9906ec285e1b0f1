"""``kiebeam evaluate`` with a LayoutXLM (visual backbone) folder: the report reads each document's page image
from its shard's image_dir, and refuses clearly when a split has none."""

from __future__ import annotations

import json

import pytest
from tiny_layoutxlm import export_tiny_layoutxlm

from training import cli
from training.shards import build_manifest, read_shard, shard_entry, write_shard

LABELS = ["OTHER", "QUESTION", "ANSWER", "HEADER"]


@pytest.fixture(scope="module")
def manifests(xfund_zh_train, tmp_path_factory):
    folder = tmp_path_factory.mktemp("lx_eval")
    docs, _ = read_shard(str(xfund_zh_train / "train.json"), LABELS, image_dir=str(xfund_zh_train / "image"))
    docs = [d for d in docs if d.name in ("zh_train_16.jpg", "zh_train_34.jpg")]
    write_shard(docs, str(folder / "s.txt"), sizes_uri=str(folder / "sizes.json"))  # page sizes without images
    with_images = shard_entry(str(folder / "s.txt"), "test", image_dir=str(xfund_zh_train / "image"))
    (folder / "m.json").write_text(build_manifest([with_images], LABELS).to_json())
    no_images = shard_entry(str(folder / "s.txt"), "test", sizes_uri=str(folder / "sizes.json"))
    (folder / "no_images.json").write_text(build_manifest([no_images], LABELS).to_json())
    ser, re_dir = export_tiny_layoutxlm(folder / "models", seed=11, link_bias=2.0)
    return folder, ser, re_dir, docs


def test_evaluate_report_of_a_layoutxlm_folder(manifests):
    folder, ser, re_dir, docs = manifests
    assert cli.main(["evaluate", "--manifest", str(folder / "m.json"), "--split", "test", "--ser_dir", str(ser),
                     "--re_dir", str(re_dir), "--out", str(folder / "report.json")]) == 0
    report = json.loads((folder / "report.json").read_text())
    assert report["documents"] == 2
    assert report["ser_token"]["support"] > 0 and 0 <= report["ser_token"]["hmean"] <= 1
    assert report["re_gold"]["model"]["support"] == sum(len(d.links()) for d in docs)


def test_evaluate_without_page_images_is_refused(manifests):
    folder, ser, re_dir, _ = manifests
    with pytest.raises(ValueError, match="reads the page image.*image_dir"):
        cli.main(["evaluate", "--manifest", str(folder / "no_images.json"), "--split", "test", "--ser_dir", str(ser),
                  "--re_dir", str(re_dir)])
