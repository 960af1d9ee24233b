"""A small fast CNN for quick runs and tests."""

from __future__ import annotations

from torch import nn

from hwsim.models.layers import conv_bn_relu, init_weights
from hwsim.models.registry import register_model


@register_model
def cnn(*, bn: bool, num_classes: int, in_channels: int, input_size: int = 32) -> nn.Module:
    """Three 3x3 convs (32, 64, 64 channels) with two 2x2 max-pools, global average pool, linear."""
    model = nn.Sequential(
        *conv_bn_relu(in_channels, 32, bn=bn),
        nn.MaxPool2d(2) if input_size >= 2 else nn.Identity(),
        *conv_bn_relu(32, 64, bn=bn),
        nn.MaxPool2d(2) if input_size >= 4 else nn.Identity(),
        *conv_bn_relu(64, 64, bn=bn),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(64, num_classes),
    )
    init_weights(model)
    return model
