"""Model pickles load through the restricted unpickler: what paddle.save writes loads, a hostile payload never runs.

The hostile file is a real pickle whose payload creates a folder (``os.mkdir``); it is first shown to run under
``paddle.load`` (what kiebeam used before), then refused by every entry point with fresh ``SHA256SUMS`` next to it.
"""

from __future__ import annotations

import json
import os
import pickle

import numpy as np
import paddle
import pytest

from models.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from models.integrity import ModelIntegrityError, write_sha256sums
from models.layoutxlm import LayoutXLMConfig, SerModel
from models.safe_load import UnsafeModelFileError, load_rng_state, load_state, safe_unpickle
from models.tokenizer import train_tokenizer
from pipelines import cli as kiebeam_cli
from schemas.manifest import ShardEntry
from training.config import get_preset
from training.shards import build_manifest, sha256_uri
from training.store import load_resume_folder, seal_resume_folder
from training.train import main as train_main

TINY = dict(vocab_size=120, hidden_size=48, num_hidden_layers=2, num_attention_heads=2, intermediate_size=96,
            coordinate_size=8, shape_size=8)
LABELS = ["OTHER", "QUESTION", "ANSWER", "HEADER"]


class _MakeFolder:
    """Pickles as a call to ``os.mkdir(path)``: the payload of a hostile model file."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (os.mkdir, (self.path,))


def _hostile_state(marker) -> bytes:
    return pickle.dumps({"classifier.bias": np.zeros(7, np.float32), "classifier.weight": _MakeFolder(str(marker))})


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory):
    return train_tokenizer(["Name: Bob", "Adresse rue", "Datum 2024", "Total 12"] * 5,
                           tmp_path_factory.mktemp("tok"), vocab_size=100)


def test_safe_load_reads_what_paddle_save_writes(tmp_path):
    paddle.seed(3)
    model = SerModel(LayoutXLMConfig(**TINY), 7)
    opt = paddle.optimizer.AdamW(learning_rate=paddle.optimizer.lr.LinearWarmup(0.1, 2, 0.0, 0.1),
                                 parameters=model.parameters())
    model.classifier(paddle.randn([2, 48])).sum().backward()
    opt.step()
    paddle.save(model.state_dict(), str(tmp_path / "m.pdparams"))
    paddle.save(opt.state_dict(), str(tmp_path / "o.pdopt"))
    (tmp_path / "rng.pkl").write_bytes(pickle.dumps(paddle.get_rng_state()))

    for name, tensors in (("m.pdparams", False), ("o.pdopt", True)):
        want = paddle.load(str(tmp_path / name))
        got = load_state(tmp_path / name, tensors=tensors)
        assert set(got) == set(want) and "StructuredToParameterName@@" not in got
        for k, v in want.items():
            if isinstance(v, paddle.Tensor):
                assert isinstance(got[k], paddle.Tensor if tensors else np.ndarray), k
                np.testing.assert_array_equal(np.asarray(got[k]), v.numpy())
            else:
                assert got[k] == v, k
    rng = load_rng_state(tmp_path / "rng.pkl")
    paddle.set_rng_state(rng)
    a = paddle.rand([3]).numpy()
    paddle.set_rng_state(rng)
    np.testing.assert_array_equal(paddle.rand([3]).numpy(), a)
    # a dict that is not a plain state dict: paddle.save stores its tensors as tuple((name, array))
    mixed = {"a": paddle.to_tensor(np.ones(2, np.float32)), "b": np.zeros(2, np.float32), "n": 3,
             "nest": {"x": paddle.to_tensor([2.0])}}
    paddle.save(mixed, str(tmp_path / "mixed.pdparams"))
    got = load_state(tmp_path / "mixed.pdparams")
    want = paddle.load(str(tmp_path / "mixed.pdparams"), return_numpy=True)
    assert got["n"] == want["n"] == 3
    for g, w in ((got["a"], want["a"]), (got["b"], want["b"]), (got["nest"]["x"], want["nest"]["x"])):
        assert isinstance(g, np.ndarray)
        np.testing.assert_array_equal(g, w)
    # older files: protocol 2 (bytes via _codecs.encode) and OrderedDict state dicts
    from collections import OrderedDict

    old = pickle.dumps(OrderedDict(w=np.arange(6, dtype=np.float32).reshape(2, 3)), protocol=2)
    np.testing.assert_array_equal(safe_unpickle(old, "old.pdparams")["w"], np.arange(6).reshape(2, 3))


@pytest.mark.parametrize("payload, refused", [
    ((eval, ("1",)), "builtins.eval"),
    ((getattr, ("x", "upper")), "builtins.getattr"),
    ((np.save, ("x", np.zeros(1))), "numpy.save"),
])
def test_safe_load_refuses_other_globals_naming_file_and_global(payload, refused):
    class _Evil:
        def __reduce__(self):
            return payload

    with pytest.raises(UnsafeModelFileError, match=f"bad.pdparams: refusing to load: it names the global {refused}"):
        safe_unpickle(pickle.dumps({"w": _Evil()}), "bad.pdparams")
    with pytest.raises(UnsafeModelFileError, match="array of Python objects"):
        safe_unpickle(pickle.dumps({"w": np.array([1, "a"], dtype=object)}), "obj.pdparams")
    with pytest.raises(UnsafeModelFileError, match="trunc.pdparams: not a readable model pickle"):
        safe_unpickle(pickle.dumps({"w": np.zeros(3)})[:-7], "trunc.pdparams")


def test_hostile_pdparams_with_fresh_sums_runs_no_code_anywhere(tok_dir, tmp_path, capsys):
    # what the old loader did with this very file: the payload runs
    probe, probe_marker = tmp_path / "probe.pdparams", tmp_path / "ran_under_paddle_load"
    probe.write_bytes(_hostile_state(probe_marker))
    paddle.load(str(probe))
    assert probe_marker.is_dir()

    marker = tmp_path / "payload_ran"
    folder = save_checkpoint(SerModel(LayoutXLMConfig(**TINY), 7), tmp_path / "ck", tokenizer_dir=tok_dir)
    (folder / "model_state.pdparams").write_bytes(_hostile_state(marker))
    write_sha256sums(folder)  # whoever supplies the folder writes its sums too
    refusal = f"{folder}/model_state.pdparams: refusing to load: it names the global posix.mkdir"
    with pytest.raises(CheckpointError, match=refusal):
        load_checkpoint(folder)
    # kiebeam export / evaluate --checkpoint: one line, exit 2
    capsys.readouterr()
    assert kiebeam_cli.main(["export", str(folder), str(tmp_path / "exported")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("kiebeam export: error: " + refusal) and err.count("\n") == 1
    manifest = _manifest(tmp_path)
    assert kiebeam_cli.main(["evaluate", "--checkpoint", str(folder), "--manifest", manifest, "--split", "val"]) == 2
    assert refusal in capsys.readouterr().err
    # train --init_from
    cfg = get_preset("tiny_ser", manifest=manifest, out_dir=str(tmp_path / "run"), max_steps=1, max_len=64,
                     vocab_size=60, progress=False)
    with pytest.raises(CheckpointError, match=refusal):
        train_main(cfg.replace(init_from=str(folder)))
    assert not marker.exists()


def test_resume_verifies_latest_and_refuses_a_hostile_one(tmp_path):
    manifest = _manifest(tmp_path)
    cfg = get_preset("tiny_ser", manifest=manifest, out_dir=str(tmp_path / "run"), max_steps=1, max_len=64,
                     vocab_size=60, progress=False, batch_size=2)
    train_main(cfg)
    latest = tmp_path / "run" / "latest"
    assert (latest / "SHA256SUMS").is_file()
    state, models, _, _ = load_resume_folder(latest, 1)
    assert state["step"] == 1 and len(models) == 1
    assert train_main(cfg.replace(max_steps=2, resume=True))["steps"] == 2  # a sealed folder resumes

    marker = tmp_path / "payload_ran"
    for name in ("model_0.pdparams", "optimizer.pdopt", "rng.pkl"):
        good = (latest / name).read_bytes()
        (latest / name).write_bytes(_hostile_state(marker))
        with pytest.raises(ModelIntegrityError, match=f"checksum mismatch for {latest / name}"):
            train_main(cfg.replace(max_steps=3, resume=True))
        seal_resume_folder(latest, 1)  # fresh sums: the folder's supplier controls them
        with pytest.raises(UnsafeModelFileError, match=f"{latest / name}: refusing to load: it names the global "
                                                       "posix.mkdir"):
            train_main(cfg.replace(max_steps=3, resume=True))
        (latest / name).write_bytes(good)
        seal_resume_folder(latest, 1)
    assert not marker.exists()
    (latest / "SHA256SUMS").unlink()  # unsealed (older kiebeam): refused unless the user says otherwise
    with pytest.raises(ModelIntegrityError, match="has no SHA256SUMS"):
        train_main(cfg.replace(max_steps=3, resume=True))
    assert train_main(cfg.replace(max_steps=3, resume=True, allow_unverified=True))["steps"] == 3


def test_train_cli_accepts_allow_unverified_models(tmp_path):
    import argparse

    from training.cli import add_subcommands, train_config_from_args

    parser = argparse.ArgumentParser()
    add_subcommands(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["train", "--manifest", "m.json", "--out_dir", "o", "--allow_unverified_models"])
    assert train_config_from_args(args).allow_unverified is True
    args = parser.parse_args(["train", "--manifest", "m.json", "--out_dir", "o"])
    assert train_config_from_args(args).allow_unverified is False
    args = parser.parse_args(["evaluate", "--checkpoint", "c", "--manifest", "m", "--allow_unverified_models"])
    assert args.allow_unverified_models is True


def _manifest(folder) -> str:
    """A 4-document synthetic shard used as train and val (page size from the manifest)."""
    def item(i, text, label, x0, y0, link=()):
        return {"transcription": text, "label": label, "points": [[x0, y0], [x0 + 60, y0], [x0 + 60, y0 + 20],
                                                                   [x0, y0 + 20]], "id": i, "linking": list(link)}
    rows = []
    for d in range(4):
        rows.append(f"doc{d}.jpg\t" + json.dumps([item(0, "FORM", "header", 10, 5),
                                                  item(1, f"Name {d}:", "question", 10, 40, [[1, 2]]),
                                                  item(2, f"Ada {d}", "answer", 90, 40, [[1, 2]]),
                                                  item(3, "Total 12", "other", 10, 80)]))
    shard = folder / "shard.txt"
    shard.write_text("\n".join(rows) + "\n")
    entries = [ShardEntry(uri=str(shard), split=s, documents=4, sha256=sha256_uri(str(shard)), page_size=(200, 120))
               for s in ("train", "val")]
    path = folder / "manifest.json"
    path.write_text(build_manifest(entries, LABELS).to_json())
    return str(path)
