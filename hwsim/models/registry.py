"""One registry of architectures keyed by name, and one door to build any of them.

Every builder of hwsim's own is an explicit function ``build(bn, num_classes, in_channels,
input_size)`` registered with :func:`register_model`. Names with a colon are references to
architectures from elsewhere (:mod:`hwsim.models.external`): ``torchvision:NAME`` and a
user's ``package.module:function`` or ``path/to/file.py:function``. :func:`create_model` is
the single way to build one, whatever its kind.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from hwsim.errors import ConfigError
from hwsim.models.external import build_external, check_external, is_external
from hwsim.registry import Registry

Builder = Callable[..., nn.Module]
MODELS: Registry[Builder] = Registry("architecture")


def register_model(fn: Builder) -> Builder:
    """Register ``fn`` under its function name (a decorator)."""
    return MODELS.add(fn.__name__, fn)


def list_models() -> list[str]:
    """The registered architecture names, in registration order."""
    return MODELS.names()


def check_arch(name: str, bn: bool | None = None) -> str:
    """Return ``name`` if it names an architecture (registered, ``torchvision:NAME`` or an
    importable factory), else raise ConfigError. With ``bn`` given, a torchvision builder is
    also checked to build with (or without) BN."""
    if is_external(name):
        return check_external(name, bn)
    if name not in MODELS:
        raise ConfigError(f"unknown architecture {name!r}; choose one of: {', '.join(MODELS)}, "
                          "torchvision:NAME, package.module:function or path/file.py:function")
    return name


def create_model(
    name: str, *, bn: bool, num_classes: int, in_channels: int, input_size: int = 32
) -> nn.Module:
    """Build architecture ``name``.

    Args:
        name: a name from :func:`list_models`, or a reference (``torchvision:NAME``,
            ``module:function``, ``file.py:function``; see :mod:`hwsim.models.external`).
        bn: with BatchNorm after every conv (True) or none at all, convs with bias (False).
        num_classes, in_channels, input_size: the dataset's shape (square inputs).

    Raises:
        ConfigError: unknown name, or a reference that cannot be built (one line).
    """
    if is_external(name):
        return build_external(name, bn=bn, num_classes=num_classes, in_channels=in_channels,
                              input_size=input_size)
    return MODELS.get(check_arch(name))(
        bn=bn, num_classes=num_classes, in_channels=in_channels, input_size=input_size
    )


def count_bn_layers(model: nn.Module) -> int:
    """Number of BatchNorm layers in ``model``."""
    return sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters (BN running statistics excluded)."""
    return sum(p.numel() for p in model.parameters())
