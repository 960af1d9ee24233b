"""CIFAR-style VGG: a table of conv widths and pools fed to one layer builder.

Without BN, a plain stack of 8 or 13 ReLU convs keeps its signal only if every layer's init
preserves the activations' scale. The shared He (fan-out) init does not: from 1 or 3 input
channels to 512 it shrinks the activations' std ~20x, and on small inputs (8x8 digits) the
skipped pools leave 3x3 convs on 1x1 and 2x2 maps, where only 1 or 4 of the 9 taps see data,
another /3 or /1.5 per layer. Measured on digits, vgg11 without BN started with logits of
std 1.5e-4, and SGD never left chance (10.2% after 15 epochs, at lr 0.05 or 0.1, with or
without gradient clipping). BN-free VGGs therefore get He init on the fan-in counted over the
taps inside the map (:func:`~hwsim.models.layers.init_plain_conv`): 99.1% on the same run.
"""

from __future__ import annotations

from torch import nn

from hwsim.models.layers import conv_bn_relu, init_plain_conv, init_weights
from hwsim.models.registry import register_model

# Simonyan & Zisserman configurations A (11 layers) and D (16 layers); "M" is a 2x2 max-pool.
_CFGS: dict[str, list[int | str]] = {
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
              512, 512, 512, "M"],
}


class VGG(nn.Module):
    """Conv stack (BN after every conv when ``bn``), global average pool, small classifier."""

    def __init__(self, cfg: list[int | str], *, bn: bool, num_classes: int, in_channels: int,
                 input_size: int):
        super().__init__()
        layers: list[nn.Module] = []
        conv_sizes: list[tuple[nn.Conv2d, int]] = []  # each conv with its input map size
        channels, size = in_channels, input_size
        for item in cfg:
            if item == "M":
                # Small inputs (8x8 digits, 28x28) cannot take all five pools: skip those that
                # would shrink the map below 1x1, so one table serves every dataset.
                if size >= 2:
                    layers.append(nn.MaxPool2d(2))
                    size //= 2
            else:
                block = conv_bn_relu(channels, int(item), bn=bn)
                conv_sizes.append((block[0], size))
                layers += block
                channels = int(item)
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(channels, 512), nn.ReLU(inplace=True),
            nn.Linear(512, num_classes),
        )
        init_weights(self)
        if not bn:  # BN models keep the shared init (and their results)
            for conv, size in conv_sizes:
                init_plain_conv(conv, size)

    def forward(self, x):
        return self.classifier(self.pool(self.features(x)))


@register_model
def vgg11(*, bn: bool, num_classes: int, in_channels: int, input_size: int = 32) -> nn.Module:
    """VGG-11 (8 convs) for 32x32-class inputs."""
    return VGG(_CFGS["vgg11"], bn=bn, num_classes=num_classes, in_channels=in_channels,
               input_size=input_size)


@register_model
def vgg16(*, bn: bool, num_classes: int, in_channels: int, input_size: int = 32) -> nn.Module:
    """VGG-16 (13 convs) for 32x32-class inputs."""
    return VGG(_CFGS["vgg16"], bn=bn, num_classes=num_classes, in_channels=in_channels,
               input_size=input_size)
