"""Building blocks shared by the architectures."""

from __future__ import annotations

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
