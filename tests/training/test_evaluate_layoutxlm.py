"""``kiebeam evaluate`` with a LayoutXLM (visual backbone) folder: the report reads each document's page image
from its shard's image_dir, and refuses clearly when a split has none."""

from __future__ import annotations

import json

import pytest
from tiny_layoutxlm import xfund_manifests

from training import cli


@pytest.fixture(scope="module")
def manifests(xfund_zh_train, tmp_path_factory, tiny_layoutxlm_dirs):
    folder = tmp_path_factory.mktemp("lx_eval")
    docs, _, _ = xfund_manifests(folder, xfund_zh_train, ("test",))
    ser, re_dir = tiny_layoutxlm_dirs
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
