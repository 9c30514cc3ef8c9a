"""CxrNet: a compact residual CNN for frontal chest radiographs (plain torch, no torchvision).

One grey channel in (224 x 224, values 0..1 from ``radsight.algorithms.cxr.preprocess``), two
outputs:

- ``logit``: one abnormality (airspace opacity / pneumonia) logit per image;
- ``seg``: two logit maps at 1/4 resolution (56 x 56): channel 0 the infection (opacity)
  mask, channel 1 the lung fields. A light feature-pyramid decoder builds them from the
  stride 4, 8, 16 and 32 features.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


def _conv_bn(cin: int, cout: int, stride: int = 1, k: int = 3) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, stride, k // 2, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class Block(nn.Module):
    """Residual block: a strided (or plain) 3x3 conv and a 3x3 conv, identity/1x1 shortcut."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = _conv_bn(cin, cout, stride)
        self.conv2 = nn.Sequential(nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout))
        self.short = (
            nn.Identity()
            if stride == 1 and cin == cout
            else nn.Sequential(
                nn.AvgPool2d(stride) if stride > 1 else nn.Identity(),
                nn.Conv2d(cin, cout, 1, bias=False),
                nn.BatchNorm2d(cout),
            )
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.conv2(self.conv1(x)) + self.short(x), inplace=True)


class CxrNet(nn.Module):
    def __init__(self, widths: tuple[int, ...] = (16, 32, 64, 96, 160), dec: int = 32) -> None:
        super().__init__()
        w0, w1, w2, w3, w4 = widths
        self.stem = nn.Sequential(_conv_bn(1, w0, 2), _conv_bn(w0, w0))  # /2
        self.stage1 = Block(w0, w1, 2)  # /4
        self.stage2 = nn.Sequential(Block(w1, w2, 2), Block(w2, w2, 1))  # /8
        self.stage3 = nn.Sequential(Block(w2, w3, 2), Block(w3, w3, 1))  # /16
        self.stage4 = nn.Sequential(Block(w3, w4, 2), Block(w4, w4, 1))  # /32
        self.dropout = nn.Dropout(0.2)
        self.head = nn.Linear(2 * w4, 1)
        self.lat = nn.ModuleList(nn.Conv2d(c, dec, 1) for c in (w1, w2, w3, w4))
        self.seg = nn.Sequential(_conv_bn(dec, dec), nn.Conv2d(dec, 2, 1))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = (x - 0.5) / 0.25
        f1 = self.stage1(self.stem(x))
        f2 = self.stage2(f1)
        f3 = self.stage3(f2)
        f4 = self.stage4(f3)
        pooled = torch.cat([f4.mean((2, 3)), f4.amax((2, 3))], 1)
        logit = self.head(self.dropout(pooled)).squeeze(1)
        d = self.lat[3](f4)
        for lat, f in zip((self.lat[2], self.lat[1], self.lat[0]), (f3, f2, f1), strict=True):
            d = F.interpolate(d, size=f.shape[-2:], mode="bilinear", align_corners=False) + lat(f)
        return logit, self.seg(d)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
