"""LayoutXLM's visual backbone: a detectron2-style ResNeXt + FPN whose ``p2`` map is pooled to 7x7 visual tokens.

The architecture and parameter names are PaddleNLP's ``paddlenlp/transformers/layoutxlm/visual_backbone.py``
(with its ``visual_backbone.yaml``: ``build_resnet_fpn_backbone``, depth 101, 32 groups x 8 channels per group,
stem 64, res2 256, FPN 256 channels, ``FrozenBN`` everywhere, ``STRIDE_IN_1X1: false``, ``RES5_DILATION: 1``,
``FREEZE_AT: 2``), so a PaddleOCR ``ser_LayoutXLM_xfun_zh`` / ``re_LayoutXLM_xfun_zh`` state dict loads unchanged
under ``layoutxlm.visual.*``. Only the parts that reach ``p2`` run: the FPN's ``fpn_output3..5`` convolutions and
its ``p6`` max-pool feed nothing LayoutXLM reads, so their weights are loaded and kept but never computed.

Input: ``(B, 3, H, W)`` float32 as PaddleOCR's KIE transforms make it (``models.page_image``: RGB, 224x224,
normalised with ImageNet mean/std in 0..255 units). The backbone then normalises a second time with its own
``pixel_mean`` / ``pixel_std`` buffers (detectron2's BGR values ``[103.53, 116.28, 123.675]`` /
``[57.375, 57.12, 58.395]``): that double normalisation is what the published checkpoints were trained with.
Output: ``(B, pool_h * pool_w, out_channels)``, row-major over the 7x7 grid (token ``k = row * 7 + col``).
"""

from __future__ import annotations

import paddle
import paddle.nn.functional as F
from paddle import ParamAttr, nn

__all__ = ["VisualBackbone", "BLOCKS_PER_STAGE", "PIXEL_MEAN", "PIXEL_STD"]

BLOCKS_PER_STAGE = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}
"""Bottleneck blocks in res2..res5 per depth (PaddleNLP implements bottleneck ResNets only)."""
PIXEL_MEAN = (103.53, 116.28, 123.675)
PIXEL_STD = (57.375, 57.12, 58.395)


class _FrozenBN(nn.BatchNorm2D):
    """detectron2's FrozenBN: running statistics always, affine parameters not trained (PaddleNLP names)."""

    def __init__(self, channels: int) -> None:
        frozen = ParamAttr(learning_rate=0.0, trainable=False)
        super().__init__(channels, weight_attr=frozen, bias_attr=ParamAttr(learning_rate=0.0, trainable=False),
                         use_global_stats=True)


class _Conv(nn.Conv2D):
    """A convolution with an optional norm after it (``conv.weight`` + ``conv.norm.*``, as detectron2)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, *, stride: int = 1, padding: int = 0,
                 groups: int = 1, bias: bool = False, norm: bool = True) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=padding, groups=groups,
                         bias_attr=None if bias else False)
        self.norm = _FrozenBN(out_channels) if norm else None

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        """``norm(conv(x))``."""
        x = super().forward(x)
        return self.norm(x) if self.norm is not None else x


class _Bottleneck(nn.Layer):
    """1x1 -> grouped 3x3 (carries the stride) -> 1x1, plus a projection shortcut when the width changes."""

    def __init__(self, in_channels: int, out_channels: int, bottleneck: int, stride: int, groups: int) -> None:
        super().__init__()
        self.shortcut = _Conv(in_channels, out_channels, 1, stride=stride) if in_channels != out_channels else None
        self.conv1 = _Conv(in_channels, bottleneck, 1)
        self.conv2 = _Conv(bottleneck, bottleneck, 3, stride=stride, padding=1, groups=groups)
        self.conv3 = _Conv(bottleneck, out_channels, 1)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        """``relu(conv3(relu(conv2(relu(conv1(x))))) + shortcut(x))``."""
        out = self.conv3(F.relu(self.conv2(F.relu(self.conv1(x)))))
        out += self.shortcut(x) if self.shortcut is not None else x
        return F.relu(out)


class _Stem(nn.Layer):
    """7x7 stride-2 conv + FrozenBN + ReLU + 3x3 stride-2 max-pool (stride 4 in all)."""

    def __init__(self, out_channels: int) -> None:
        super().__init__()
        self.conv1 = _Conv(3, out_channels, 7, stride=2, padding=3)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        """``(B, 3, H, W)`` -> ``(B, C, H/4, W/4)``."""
        return F.max_pool2d(F.relu(self.conv1(x)), kernel_size=3, stride=2, padding=1)


class _ResNet(nn.Layer):
    """The bottom-up ResNeXt (``bottom_up.stem``, ``bottom_up.res2`` .. ``res5``)."""

    def __init__(self, depth: int, groups: int, width_per_group: int, stem_channels: int, res2_channels: int,
                 freeze_at: int = 2) -> None:
        super().__init__()
        self.stem = _Stem(stem_channels)
        in_ch, out_ch, bottleneck = stem_channels, res2_channels, groups * width_per_group
        self.stage_names = []
        for i, n in enumerate(BLOCKS_PER_STAGE[depth]):
            blocks = [_Bottleneck(in_ch if b == 0 else out_ch, out_ch, bottleneck, 2 if (i > 0 and b == 0) else 1,
                                  groups) for b in range(n)]
            name = f"res{i + 2}"
            self.add_sublayer(name, nn.Sequential(*blocks))
            self.stage_names.append(name)
            in_ch, out_ch, bottleneck = out_ch, out_ch * 2, bottleneck * 2
        self.out_channels = [res2_channels * 2 ** i for i in range(4)]
        # detectron2 FREEZE_AT=2: the stem and res2 are never trained (PaddleNLP sets stop_gradient on them).
        frozen = [self.stem] + [getattr(self, n) for n in self.stage_names[:max(freeze_at - 1, 0)]]
        for layer in frozen:
            for p in layer.parameters():
                p.stop_gradient = True

    def forward(self, x: paddle.Tensor) -> list[paddle.Tensor]:
        """res2..res5 feature maps (strides 4, 8, 16, 32)."""
        x = self.stem(x)
        outs = []
        for name in self.stage_names:
            x = getattr(self, name)(x)
            outs.append(x)
        return outs


class _FPN(nn.Layer):
    """Top-down FPN over res2..res5 (``fpn_lateral{2..5}``, ``fpn_output{2..5}``, sum fusion, no norm)."""

    def __init__(self, bottom_up: _ResNet, out_channels: int) -> None:
        super().__init__()
        self.bottom_up = bottom_up
        for level, ch in zip(range(2, 6), bottom_up.out_channels):
            self.add_sublayer(f"fpn_lateral{level}", _Conv(ch, out_channels, 1, bias=True, norm=False))
            self.add_sublayer(f"fpn_output{level}", _Conv(out_channels, out_channels, 3, padding=1, bias=True,
                                                          norm=False))

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        """The ``p2`` map ``(B, C, H/4, W/4)``."""
        res = self.bottom_up(x)
        prev = self.fpn_lateral5(res[3])
        for level in (4, 3, 2):
            # Nearest 2x upsampling (PaddleNLP: F.interpolate(scale_factor=2.0, mode="nearest"), the same values);
            # written as repeats because Paddle Inference's oneDNN executor rejects interpolate's float-list attr.
            top_down = paddle.repeat_interleave(paddle.repeat_interleave(prev, 2, axis=2), 2, axis=3)
            prev = getattr(self, f"fpn_lateral{level}")(res[level - 2]) + top_down
        return self.fpn_output2(prev)


class VisualBackbone(nn.Layer):
    """ResNeXt-FPN ``p2`` -> adaptive average pool -> visual token features (``layoutxlm.visual``).

    Args:
        depth: 50, 101 or 152 (LayoutXLM-base: 101).
        groups / width_per_group: ResNeXt cardinality and width (32 x 8).
        stem_channels / res2_channels: widths of the stem and of res2's output (64, 256).
        out_channels: FPN width, the visual token feature size (256 = ``image_feature_pool_shape[2]``).
        pool_shape: visual token grid ``(rows, cols)`` (7, 7).
    """

    def __init__(self, depth: int = 101, groups: int = 32, width_per_group: int = 8, stem_channels: int = 64,
                 res2_channels: int = 256, out_channels: int = 256, pool_shape: tuple[int, int] = (7, 7)) -> None:
        super().__init__()
        if depth not in BLOCKS_PER_STAGE:
            raise ValueError(f"visual backbone depth={depth} is not supported, expected one of "
                             f"{sorted(BLOCKS_PER_STAGE)} (bottleneck ResNeXt, as PaddleNLP)")
        self.backbone = _FPN(_ResNet(depth, groups, width_per_group, stem_channels, res2_channels), out_channels)
        self.register_buffer("pixel_mean", paddle.to_tensor(PIXEL_MEAN, dtype="float32").reshape([3, 1, 1]))
        self.register_buffer("pixel_std", paddle.to_tensor(PIXEL_STD, dtype="float32").reshape([3, 1, 1]))
        self.pool = nn.AdaptiveAvgPool2D(list(pool_shape))

    def forward(self, image: paddle.Tensor) -> paddle.Tensor:
        """``(B, 3, H, W)`` normalised page images -> ``(B, rows * cols, out_channels)`` token features."""
        p2 = self.backbone((image - self.pixel_mean) / self.pixel_std)
        return self.pool(p2).flatten(start_axis=2).transpose([0, 2, 1])
