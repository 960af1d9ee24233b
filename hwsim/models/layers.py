"""Building blocks shared by the architectures."""

from __future__ import annotations

import math

from torch import nn


def conv_bn_relu(
    cin: int, cout: int, *, bn: bool, kernel_size: int = 3, stride: int = 1, relu: bool = True
) -> list[nn.Module]:
    """A conv followed by BatchNorm (when ``bn``) and ReLU; without BN the conv has a bias.

    The conv always comes directly before its BN, which is what BN folding relies on.
    """
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, kernel_size, stride=stride, padding=kernel_size // 2, bias=not bn)
    ]
    if bn:
        layers.append(nn.BatchNorm2d(cout))
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return layers


def init_weights(model: nn.Module) -> None:
    """He (fan-out) init for convs, small-normal linears, zero biases, unit BN scales."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.kaiming_uniform_(m.weight, a=5**0.5)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.modules.batchnorm._BatchNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def inside_taps(size: int, kernel_size: int = 3) -> float:
    """Average number of a "same"-padded square kernel's taps that fall inside a size x size map.

    A 3x3 conv sees all 9 taps only far from the border: on average 7.6 on an 8x8 map, 4 on a
    2x2 map and 1 on a 1x1 map, where the padding supplies the rest as zeros.
    """
    pad = kernel_size // 2
    per_axis = sum(min(i + pad, size - 1) - max(i - pad, 0) + 1 for i in range(size)) / size
    return per_axis * per_axis


def init_plain_conv(conv: nn.Conv2d, input_size: int) -> None:
    """He init for a conv in a net without normalisation: fan-in counted over the taps that see
    the map (:func:`inside_taps`), so each ReLU layer keeps its input's scale."""
    fan_in = conv.in_channels // conv.groups * inside_taps(input_size, conv.kernel_size[0])
    nn.init.normal_(conv.weight, 0.0, math.sqrt(2.0 / fan_in))
