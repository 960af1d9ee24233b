"""The CIFAR ResNets of He et al. (2016): 3 stages of 16/32/64 channels, 6n+2 weight layers.

Shortcuts that change shape use a 1x1 strided conv without BN (the Keras ``resnet_v1``
CIFAR example the BN-robustness study built on), so a model has 6n+1 BN layers with BN.
Without BN, the last conv of every residual branch starts at zero (SkipInit / Fixup's key
ingredient): each block is the identity at initialisation, which keeps deep BN-free ResNets
trainable with ordinary SGD.
"""

from __future__ import annotations

import torch
from torch import nn

from hwsim.models.layers import conv_bn_relu, init_weights
from hwsim.models.registry import register_model


class BasicBlock(nn.Module):
    """Two 3x3 convs with a residual connection; ReLU after the sum."""

    def __init__(self, cin: int, cout: int, stride: int, *, bn: bool):
        super().__init__()
        self.branch = nn.Sequential(
            *conv_bn_relu(cin, cout, bn=bn, stride=stride),
            *conv_bn_relu(cout, cout, bn=bn, relu=False),
        )
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Conv2d(cin, cout, 1, stride=stride, bias=not bn)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.branch(x) + self.shortcut(x))


class CifarResNet(nn.Module):
    def __init__(self, n: int, *, bn: bool, num_classes: int, in_channels: int):
        super().__init__()
        self.stem = nn.Sequential(*conv_bn_relu(in_channels, 16, bn=bn))
        blocks: list[nn.Module] = []
        cin = 16
        for stage, cout in enumerate((16, 32, 64)):
            for i in range(n):
                stride = 2 if stage > 0 and i == 0 else 1
                blocks.append(BasicBlock(cin, cout, stride, bn=bn))
                cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, num_classes)
        init_weights(self)
        if not bn:
            for block in blocks:
                last_conv = block.branch[-1]
                nn.init.zeros_(last_conv.weight)
                nn.init.zeros_(last_conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.stem(x))
        return self.fc(torch.flatten(self.pool(x), 1))


@register_model
def resnet20(*, bn: bool, num_classes: int, in_channels: int, input_size: int = 32) -> nn.Module:
    """ResNet-20 (n=3)."""
    return CifarResNet(3, bn=bn, num_classes=num_classes, in_channels=in_channels)


@register_model
def resnet32(*, bn: bool, num_classes: int, in_channels: int, input_size: int = 32) -> nn.Module:
    """ResNet-32 (n=5)."""
    return CifarResNet(5, bn=bn, num_classes=num_classes, in_channels=in_channels)


@register_model
def resnet44(*, bn: bool, num_classes: int, in_channels: int, input_size: int = 32) -> nn.Module:
    """ResNet-44 (n=7)."""
    return CifarResNet(7, bn=bn, num_classes=num_classes, in_channels=in_channels)


@register_model
def resnet56(*, bn: bool, num_classes: int, in_channels: int, input_size: int = 32) -> nn.Module:
    """ResNet-56 (n=9)."""
    return CifarResNet(9, bn=bn, num_classes=num_classes, in_channels=in_channels)
