"""Checkpoints: round trip, PaddleOCR/PaddleNLP folders, corrupt folders, export == dynamic graph."""

from __future__ import annotations

import json
import pickle

import numpy as np
import paddle
import pytest

from models.checkpoint import CheckpointError, export_inference, load_checkpoint, save_checkpoint
from models.integrity import ModelIntegrityError, write_sha256sums
from models.layoutxlm import LayoutXLMConfig, ReModel, SerModel
from models.paddle_infer import InferenceOptions, PaddlePredictor
from models.tokenizer import TokenizerError, load_tokenizer, train_tokenizer

TINY = dict(vocab_size=120, hidden_size=48, num_hidden_layers=2, num_attention_heads=2, intermediate_size=96,
            coordinate_size=8, shape_size=8)


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory):
    return train_tokenizer(["Name: Bob", "姓名：张三", "Adresse rue", "Datum 2024"] * 5,
                           tmp_path_factory.mktemp("tok"), vocab_size=100)


def _inputs(seq=32, seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(3, 120, (2, seq)).astype(np.int64)
    x0, y0 = rng.integers(0, 500, (2, 2, seq))
    bbox = np.stack([x0, y0, x0 + 100, y0 + 20], -1).astype(np.int64)
    mask = np.ones((2, seq), np.int64)
    mask[1, 20:] = 0
    return ids, bbox, mask, np.zeros_like(ids)


def _logits(model, *arrays):
    with paddle.no_grad():
        return model(*[paddle.to_tensor(a) for a in arrays]).logits.numpy()


def test_tokenizer_folder(tok_dir, tmp_path):
    tok = load_tokenizer(tok_dir)
    assert tok.pad_token_id == 1 and tok.convert_tokens_to_ids(["<s>", "</s>", "<unk>"]) == [0, 2, 3]
    sp = tok.sp_model
    piece = tok.tokenize("Name")[-1]
    assert tok.convert_tokens_to_ids([piece])[0] == sp.piece_to_id(piece) + 1  # fairseq offset
    with pytest.raises(TokenizerError, match="sentencepiece.bpe.model is missing"):
        load_tokenizer(tmp_path)
    (tmp_path / "sentencepiece.bpe.model").write_bytes(b"not a model")
    with pytest.raises(TokenizerError, match="not a valid sentencepiece model"):
        load_tokenizer(tmp_path)


def test_round_trip(tok_dir, tmp_path):
    paddle.seed(0)
    model = SerModel(LayoutXLMConfig(**TINY), num_labels=5)
    model.eval()
    labels = ["O", "B-KEY", "I-KEY", "B-VALUE", "I-VALUE"]
    folder = save_checkpoint(model, tmp_path / "ck", tokenizer_dir=tok_dir, labels=labels,
                             training_data={"shards": ["gs://b/train-0.jsonl"]}, metrics={"hmean": 0.5})
    ck = load_checkpoint(folder)
    assert ck.task == "ser" and ck.labels == labels and ck.config == model.config
    assert ck.metadata["metrics"] == {"hmean": 0.5} and ck.metadata["training_data"]["shards"]
    x = _inputs()[:3]
    assert np.array_equal(_logits(ck.model, *x), _logits(model, *x))
    with pytest.raises(CheckpointError, match="expected re"):
        load_checkpoint(folder, task="re")


def test_paddleocr_best_accuracy_folder_loads_and_matches_paddlenlp(tok_dir, tmp_path):
    from paddlenlp.transformers import LayoutXLMConfig as NlpConfig
    from paddlenlp.transformers import LayoutXLMForTokenClassification

    paddle.seed(3)
    nlp_cfg = NlpConfig(use_visual_backbone=False, num_labels=7, **TINY)
    ref = LayoutXLMForTokenClassification(nlp_cfg)
    ref.eval()
    folder = tmp_path / "best_accuracy"
    folder.mkdir()
    paddle.save(ref.state_dict(), str(folder / "model_state.pdparams"))
    base = {**TINY, "use_visual_backbone": False, "has_relative_attention_bias": False,
            "has_spatial_attention_bias": False, "hidden_act": "gelu", "max_position_embeddings": 514,
            "max_2d_position_embeddings": 1024, "init_class": "LayoutXLMModel"}
    (folder / "model_config.json").write_text(json.dumps(
        {"init_args": [base], "init_class": "LayoutXLMForTokenClassification", "num_classes": 7, "dropout": 0}))
    with pytest.raises(ModelIntegrityError, match="SHA256SUMS"):
        load_checkpoint(folder, tokenizer_dir=tok_dir)
    with pytest.raises(CheckpointError, match="sentencepiece.bpe.model is missing"):
        load_checkpoint(folder, allow_unverified=True)
    ck = load_checkpoint(folder, allow_unverified=True, tokenizer_dir=tok_dir)
    assert ck.task == "ser" and ck.labels[1] == "B-QUESTION"
    ids, bbox, mask, _ = _inputs()
    with paddle.no_grad():
        want = ref(input_ids=paddle.to_tensor(ids), bbox=paddle.to_tensor(bbox),
                   attention_mask=paddle.to_tensor(mask))[0].numpy()
    assert np.abs(_logits(ck.model, ids, bbox, mask) - want).max() < 1e-5
    # PaddleNLP folder: config.json + model_state.pdparams
    nlp_dir = tmp_path / "nlp"
    ref.save_pretrained(str(nlp_dir))
    write_sha256sums(nlp_dir)
    ck2 = load_checkpoint(nlp_dir, tokenizer_dir=tok_dir)
    assert np.abs(_logits(ck2.model, ids, bbox, mask) - want).max() < 1e-5


def _corrupt(folder, edit):
    state = paddle.load(str(folder / "model_state.pdparams"))
    edit(state)
    paddle.save(state, str(folder / "model_state.pdparams"))
    write_sha256sums(folder)


def test_corrupt_checkpoints_name_the_file(tok_dir, tmp_path):
    model = ReModel(LayoutXLMConfig(**TINY))
    cases = {
        "missing": (lambda s: s.pop("extractor.entity_emb.weight"), "missing 1 keys.*extractor.entity_emb"),
        "unexpected": (lambda s: s.__setitem__("extra.weight", np.zeros(2, np.float32)), "unexpected keys.*extra"),
        "shape": (lambda s: s.__setitem__("extractor.entity_emb.weight", np.zeros((4, 48), np.float32)),
                  "extractor.entity_emb.weight has shape \\[4, 48\\]"),
    }
    for name, (edit, msg) in cases.items():
        folder = save_checkpoint(model, tmp_path / name, tokenizer_dir=tok_dir)
        _corrupt(folder, edit)
        with pytest.raises(CheckpointError, match=f"{folder}/model_state.pdparams.*{msg}|{msg}") as err:
            load_checkpoint(folder)
        assert "model_state.pdparams" in str(err.value)
    # visual-backbone keys of non-VI checkpoints are accepted and ignored
    folder = save_checkpoint(model, tmp_path / "visual", tokenizer_dir=tok_dir)
    _corrupt(folder, lambda s: s.__setitem__("layoutxlm.visual_proj.weight", np.zeros((256, 48), np.float32)))
    assert load_checkpoint(folder).task == "re"
    # checksum mismatch
    folder = save_checkpoint(model, tmp_path / "sum", tokenizer_dir=tok_dir)
    with open(folder / "config.json", "a") as f:
        f.write(" ")
    with pytest.raises(ModelIntegrityError, match="checksum mismatch for .*config.json"):
        load_checkpoint(folder)
    # missing tokenizer
    folder = save_checkpoint(model, tmp_path / "notok", tokenizer_dir=tok_dir)
    (folder / "sentencepiece.bpe.model").unlink()
    with pytest.raises(CheckpointError, match="sentencepiece.bpe.model is missing"):
        load_checkpoint(folder)
    # a pickle that is not a state dict
    folder = save_checkpoint(model, tmp_path / "notdict", tokenizer_dir=tok_dir)
    (folder / "model_state.pdparams").write_bytes(pickle.dumps([1, 2]))
    write_sha256sums(folder)
    with pytest.raises(CheckpointError, match="model_state.pdparams holds a list"):
        load_checkpoint(folder)


@pytest.mark.parametrize("mkldnn,relative", [(True, False), (False, False), (True, True)])
def test_export_matches_dynamic_graph(tok_dir, tmp_path, mkldnn, relative):
    """``relative``: LayoutLMv2's 1-D and 2-D attention bias tables (random, non-zero) go through the export."""
    paddle.seed(11)
    cfg = LayoutXLMConfig(**TINY, has_relative_attention_bias=relative, has_spatial_attention_bias=relative)
    ser, re = SerModel(cfg, 7), ReModel(cfg)
    ser.eval()
    re.eval()
    ck = save_checkpoint(ser, tmp_path / "ser_ck", tokenizer_dir=tok_dir)
    ser_dir = export_inference(ck, tmp_path / "ser", max_len=32)
    re_dir = export_inference(re, tmp_path / "re", tokenizer_dir=tok_dir, max_len=32)
    opts = InferenceOptions(enable_mkldnn=mkldnn, precision="fp32")  # parity: not bf16 on a bf16 CPU
    ids, bbox, mask, tt = _inputs()
    got = PaddlePredictor(ser_dir, opts).run([ids, bbox, mask, tt])[0]
    assert got.shape == (2, 32, 7)
    assert np.abs(got - _logits(ser, ids, bbox, mask)).max() < 1e-4
    ents = np.array([[[0, 3, 1], [3, 5, 2], [5, 9, 2]], [[0, 2, 1], [2, 4, 2], [-1, -1, -1]]], np.int64)
    pairs = np.array([[[0, 1], [0, 2]], [[0, 1], [-1, -1]]], np.int64)
    got = PaddlePredictor(re_dir, opts).run([ids, bbox, mask, tt, ents, pairs])[0]
    want = _logits(re, ids, bbox, mask, ents, pairs)
    assert got.shape == (2, 2, 2)
    assert np.abs(got - want)[[0, 0, 1], [0, 1, 0]].max() < 1e-4
    meta = json.loads((ser_dir / "metadata.json").read_text())
    assert meta["task"] == "ser" and meta["max_len"] == 32
