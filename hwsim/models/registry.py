"""One registry of architectures keyed by name.

Every builder is an explicit function ``build(bn, num_classes, in_channels, input_size)``
registered with :func:`register_model`; :func:`create_model` is the single way to build one.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from hwsim.registry import Registry

Builder = Callable[..., nn.Module]
MODELS: Registry[Builder] = Registry("architecture")


def register_model(fn: Builder) -> Builder:
    """Register ``fn`` under its function name (a decorator)."""
    return MODELS.add(fn.__name__, fn)


def list_models() -> list[str]:
    """The registered architecture names, in registration order."""
    return MODELS.names()


def check_arch(name: str) -> str:
    """Return ``name`` if it is a registered architecture, else raise ConfigError."""
    return MODELS.check(name)


def create_model(
    name: str, *, bn: bool, num_classes: int, in_channels: int, input_size: int = 32
) -> nn.Module:
    """Build architecture ``name``.

    Args:
        name: a name from :func:`list_models`.
        bn: with BatchNorm after every conv (True) or none at all, convs with bias (False).
        num_classes, in_channels, input_size: the dataset's shape (square inputs).

    Raises:
        ConfigError: unknown name.
    """
    return MODELS.get(name)(
        bn=bn, num_classes=num_classes, in_channels=in_channels, input_size=input_size
    )


def count_bn_layers(model: nn.Module) -> int:
    """Number of BatchNorm layers in ``model``."""
    return sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters (BN running statistics excluded)."""
    return sum(p.numel() for p in model.parameters())
