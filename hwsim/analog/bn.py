"""BatchNorm on the chip: the BN modes, and folding each eval-mode BN into its conv.

``keep`` leaves BN digital between analog layers with the statistics measured in training;
``fold`` absorbs it into the conv weights before mapping (below); ``recal`` keeps it digital
and re-estimates its statistics on the chip (:mod:`hwsim.analog.recalibrate`).

``y = gamma * (conv(x) - mu) / sqrt(var + eps) + beta`` equals a conv with weights scaled by
``s = gamma / sqrt(var + eps)`` per output channel and bias ``(b - mu) * s + beta``. Every
architecture in the registry puts a BN directly after its conv inside an ``nn.Sequential``
(see ``hwsim.models.layers.conv_bn_relu``), which is the pattern folded here.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from hwsim.errors import ConfigError

BN_MODES = ("keep", "fold", "recal")


def check_bn_mode(mode: str) -> str:
    if mode not in BN_MODES:
        raise ConfigError(f"unknown BN mode {mode!r}; choose one of: {', '.join(BN_MODES)}")
    return mode


@torch.no_grad()
def fold_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """A new conv computing ``bn(conv(x))`` with BN in eval mode."""
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride,
                      padding=conv.padding, dilation=conv.dilation, groups=conv.groups,
                      bias=True, padding_mode=conv.padding_mode).to(conv.weight.device)
    fused.weight.copy_(conv.weight * scale.view(-1, 1, 1, 1))
    bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
    fused.bias.copy_((bias - bn.running_mean) * scale + bn.bias)
    return fused


def fold_bn(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with every BN folded into its conv (BN replaced by Identity).

    Raises:
        ConfigError: a BN that does not directly follow a conv (cannot be folded).
    """
    model = copy.deepcopy(model).eval()
    for module in model.modules():
        if not isinstance(module, nn.Sequential):
            continue
        for i in range(1, len(module)):
            prev, cur = module[i - 1], module[i]
            if isinstance(cur, nn.BatchNorm2d) and isinstance(prev, nn.Conv2d):
                module[i - 1] = fold_conv_bn(prev, cur)
                module[i] = nn.Identity()
    left = [n for n, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if left:
        raise ConfigError(f"cannot fold BatchNorm layers not preceded by a conv: {', '.join(left)}")
    return model
