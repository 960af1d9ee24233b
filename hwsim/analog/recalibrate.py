"""BN recalibration on the chip (BN mode ``recal``): re-estimate BatchNorm statistics through
the analog model.

A BN layer's running statistics were measured on the clean digital weights; on a programmed,
drifted or noisy chip they are stale. Recalibration (Joshi et al., Nature Communications
2020, "AdaBS") resets them and re-estimates them over a small set of *training* images
forwarded through the chip exactly as inference forwards the test set (forward noise
included), leaving BN's affine parameters alone. The statistics are a cumulative average
over the calibration batches (``momentum=None``), as :func:`torch.optim.swa_utils.update_bn`
computes them; that function is not used as such because it puts the whole model into
training mode, and an aihwkit analog layer in training mode stops applying its drift
compensation. Here only the BN layers train; everything else stays in eval mode.

This works on any engine's ``model``: BN stays a digital ``BatchNorm1d``/``2d`` in all of
them, and every BN layer of the model is recalibrated, whatever its nesting.
"""

from __future__ import annotations

import time

import torch
from torch import nn

from hwsim.data import Dataset, normalize
from hwsim.errors import ConfigError

# 512 training images: measured on the digits cnn and Fashion-MNIST ResNet-20 (see README,
# "BN recalibration"); more images change the recalibrated accuracy by less than its CI.
DEFAULT_CALIB_SIZE = 512


def bn_layers(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def calibration_sample(data: Dataset, size: int, seed: int) -> torch.Tensor:
    """``size`` training images (uint8, no augmentation) drawn without replacement from
    ``data``'s training split by a generator seeded with ``seed``: the same images for the
    same seed, never a test image.

    Raises:
        ConfigError: ``size`` < 1 or more than the training split holds.
    """
    n = len(data.train_y)
    if size < 1:
        raise ConfigError(f"--calib-size must be >= 1, got {size}")
    if size > n:
        raise ConfigError(f"--calib-size {size} exceeds the {n} training images of {data.name}")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return data.train_x[order[:size]]


@torch.no_grad()
def recalibrate_bn(model: nn.Module, images: torch.Tensor, normalization: dict, *,
                   batch_size: int, device: torch.device | str, seed: int) -> float:
    """Reset every BN layer's running statistics and re-estimate them over ``images``.

    The images go through ``model`` in near-equal batches of at most ``batch_size`` (one
    batch when they fit), with only the BN layers in training mode. Random draws of the
    forward pass (the chip's output noise) come from ``seed``; torch's global RNG is restored
    afterwards, so the evaluation that follows draws exactly what it would have drawn
    without recalibration. The model is left in eval mode.

    Returns:
        The seconds it took.

    Raises:
        ConfigError: ``model`` has no BatchNorm layer.
    """
    start = time.perf_counter()
    layers = bn_layers(model)
    if not layers:
        raise ConfigError("the model has no BatchNorm layers: there is nothing to recalibrate")
    device = torch.device(device)
    momenta = [m.momentum for m in layers]
    model.eval()
    forked = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=forked):
        torch.manual_seed(seed)
        try:
            for m in layers:
                m.reset_running_stats()
                m.momentum = None  # cumulative average over the batches
                m.train()
            n_batches = -(-len(images) // batch_size)
            for chunk in images.tensor_split(n_batches):
                model(normalize(chunk.to(device), normalization["mean"], normalization["std"]))
        finally:
            for m, momentum in zip(layers, momenta):
                m.momentum = momentum
                m.eval()
    return time.perf_counter() - start
