"""``training.calibrate --links``: the RE link threshold tuned on validation pages, recorded, read back."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from training.calibrate import main, tune_link_threshold
from training.shards import build_manifest, read_shard, shard_entry, write_shard

LABELS = ["OTHER", "QUESTION", "ANSWER", "HEADER"]
DEFAULT_KIE = Path(__file__).resolve().parents[2] / "models" / "assets" / "default_kie"


@pytest.fixture(scope="module")
def val_manifest(xfund_zh_train, tmp_path_factory):
    # two validation documents of the default recipe (XFUND zh 139..148), never held-out ones (0..29)
    folder = tmp_path_factory.mktemp("links")
    docs, _ = read_shard(str(xfund_zh_train / "train.json"), LABELS, page_size=(2480, 3508))  # no image beyond 39
    docs = [d for d in docs if d.name in ("zh_train_139.jpg", "zh_train_140.jpg")]
    assert len(docs) == 2
    write_shard(docs, str(folder / "s.txt"), sizes_uri=str(folder / "s.txt.sizes.json"))
    entry = shard_entry(str(folder / "s.txt"), "val", sizes_uri=str(folder / "s.txt.sizes.json"))
    (folder / "m.json").write_text(build_manifest([entry], LABELS).to_json())
    return str(folder / "m.json")


def test_link_threshold_is_the_grid_value_with_the_best_pair_f1_and_is_recorded(val_manifest, tmp_path):
    from models.kie import KiePredictor

    res = tune_link_threshold(str(DEFAULT_KIE / "ser"), str(DEFAULT_KIE / "re"), val_manifest, grid=(0.3, 0.5, 0.7))
    assert set(res["scores"]) == {0.3, 0.5, 0.7} and res["documents"] == 2
    for s in res["scores"].values():
        assert 0 < s["gold_ocr"] <= 1 and 0 < s["detector_view"] <= 1
        assert s["sum"] == pytest.approx(s["gold_ocr"] + s["detector_view"])
    best = max(s["sum"] for s in res["scores"].values())
    assert res["scores"][res["link_threshold"]]["sum"] == pytest.approx(best)
    re_dir = shutil.copytree(DEFAULT_KIE / "re", tmp_path / "re")
    assert main(["--ser_dir", str(DEFAULT_KIE / "ser"), "--re_dir", str(re_dir), "--manifest", val_manifest,
                 "--links", "--write"]) == 0
    meta = json.loads((re_dir / "metadata.json").read_text())
    assert meta["link_threshold"] in (0.2, 0.3, 0.4, 0.5) and meta["link_threshold_tuning"]["split"] == "val"
    kie = KiePredictor.from_dirs(DEFAULT_KIE / "ser", re_dir)  # re-sealed SHA256SUMS: the folder still verifies
    assert kie.link_threshold == meta["link_threshold"]


def test_calibrate_refuses_the_held_out_split_and_links_without_an_re_folder(val_manifest, capsys):
    ser = str(DEFAULT_KIE / "ser")
    assert main(["--ser_dir", ser, "--manifest", val_manifest, "--split", "test", "--links",
                 "--re_dir", str(DEFAULT_KIE / "re")]) == 2
    assert main(["--ser_dir", ser, "--manifest", val_manifest, "--links"]) == 2
    assert "--links needs --re_dir" in capsys.readouterr().err
