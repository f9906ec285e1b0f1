"""Tiny random-weight LayoutXLM (with its visual backbone) SER and RE models, exported, for predictor and
pipeline tests. Built in about 20 s on 2 CPUs without shared data; the weights are random but deterministic."""

from __future__ import annotations

from pathlib import Path

TINY_VISUAL_CONFIG = dict(vocab_size=402, hidden_size=48, num_hidden_layers=2, num_attention_heads=2,
                          intermediate_size=96, coordinate_size=8, shape_size=8, use_visual_backbone=True,
                          image_feature_pool_shape=(7, 7, 16), visual_depth=50, visual_num_groups=2,
                          visual_width_per_group=4, visual_stem_channels=8, visual_res2_channels=16)


def export_tiny_layoutxlm(root: Path, *, seed: int = 2022, link_bias: float = 0.0) -> tuple[Path, Path]:
    """Exports ``(ser_dir, re_dir)`` of the ``layoutxlm`` family under ``root`` (one tiny tokenizer for both).

    Args:
        root: the folder (``tokenizer/``, ``ser/``, ``re/`` are written in it).
        seed: Paddle seed of the random weights.
        link_bias: added to the RE classifier's "linked" logit, so a random model links some pairs.
    """
    import paddle
    from conftest import _KIE_TEXTS

    from models.checkpoint import export_inference
    from models.layoutxlm import LayoutXLMConfig, ReModel, SerModel
    from models.tokenizer import train_tokenizer

    tok = train_tokenizer(list(_KIE_TEXTS) * 4, root / "tokenizer", vocab_size=400)
    cfg = LayoutXLMConfig(**TINY_VISUAL_CONFIG)
    paddle.seed(seed)
    ser, re = SerModel(cfg, num_labels=7), ReModel(cfg)
    with paddle.no_grad():
        re.extractor.rel_classifier.linear.bias.set_value(paddle.to_tensor([0.0, link_bias]))
    return (export_inference(ser, root / "ser", tokenizer_dir=tok),
            export_inference(re, root / "re", tokenizer_dir=tok))


def xfund_manifests(folder: Path, xfund_dir: Path, splits: tuple[str, ...]) -> tuple[list, Path, Path]:
    """Two XFUND zh documents as one shard, and two manifests over it for ``splits``: one whose shards have the
    page images (``image_dir``), one with only the page sizes (no image_dir).

    Returns:
        ``(documents, manifest with images, manifest without)``.
    """
    from training.shards import build_manifest, read_shard, shard_entry, write_shard

    labels = ["OTHER", "QUESTION", "ANSWER", "HEADER"]
    docs, _ = read_shard(str(xfund_dir / "train.json"), labels, image_dir=str(xfund_dir / "image"))
    docs = [d for d in docs if d.name in ("zh_train_16.jpg", "zh_train_34.jpg")]
    shard, sizes = str(folder / "s.txt"), str(folder / "sizes.json")
    write_shard(docs, shard, sizes_uri=sizes)  # the sizes let a shard without images load
    with_images = build_manifest([shard_entry(shard, s, image_dir=str(xfund_dir / "image")) for s in splits], labels)
    without = build_manifest([shard_entry(shard, s, sizes_uri=sizes) for s in splits], labels)
    (folder / "m.json").write_text(with_images.to_json())
    (folder / "no_images.json").write_text(without.to_json())
    return docs, folder / "m.json", folder / "no_images.json"
