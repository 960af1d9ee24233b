"""Architectures from elsewhere, named by a reference string.

- ``torchvision:NAME``: one of torchvision's classification builders (random init, no
  downloaded weights), built for the dataset's classes and input channels. For inputs of
  32x32 or smaller the stem is the small-input one CIFAR ResNets use: the first conv has
  stride 1 (a 7x7 one becomes 3x3, padding 1) and a stem max-pool (``maxpool``) is dropped,
  so an 8x8 or 28x28 image is not shrunk to 1x1 before the first block; a later pool that
  would get a map smaller than its window (VGG's fifth on 28x28) becomes an identity. Without BN
  (``bn=False``) the builder's ``norm_layer`` is ``nn.Identity`` and every conv gets a bias,
  as in hwsim's own BN-free models; a builder that takes no ``norm_layer`` is refused.
- ``package.module:function`` or ``path/to/file.py:function``: a user's factory, called with
  the keywords it accepts among ``num_classes``, ``in_channels``, ``input_size`` and ``bn``.
  This imports and runs the user's own code, as ``python -m`` does. Checkpoints record the
  reference string only, never code: rebuilding needs the same file or module.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import sys
from collections.abc import Callable
from functools import cache
from pathlib import Path

import torch
from torch import nn

from hwsim.errors import ConfigError

TORCHVISION = "torchvision:"
SMALL_INPUT = 32  # inputs of this size or smaller get the small-input stem
FACTORY_KEYWORDS = ("num_classes", "in_channels", "input_size", "bn")


def is_external(name: str) -> bool:
    """Whether ``name`` is a reference (``torchvision:NAME`` or ``module:function``)."""
    return ":" in name


def torchvision_names() -> list[str]:
    """torchvision's classification builders, as ``torchvision:NAME``."""
    from torchvision import models

    return [TORCHVISION + n for n in models.list_models(module=models)]


def _has_bn(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


# ------------------------------------------------------------------------ torchvision


def _tv_builder(name: str) -> Callable[..., nn.Module]:
    short = name.removeprefix(TORCHVISION)
    if name not in torchvision_names():
        from torchvision import models

        close = [n for n in models.list_models(module=models) if n.startswith(short[:3])]
        hint = f" (did you mean {', '.join(close[:6])}?)" if close and short else ""
        raise ConfigError(f"unknown torchvision classification model {short!r}{hint}; "
                          "see 'hwsim models' for the list")
    from torchvision import models

    return models.get_model_builder(short)


@cache
def _tv_default_has_bn(name: str) -> bool:
    with torch.device("meta"):  # no memory, no random numbers
        return _has_bn(_tv_builder(name)(weights=None, num_classes=10))


def _tv_kwargs(name: str, bn: bool) -> dict:
    """The builder's keywords for BN-ness ``bn``, or the refusal."""
    short = name.removeprefix(TORCHVISION)
    has_bn = _tv_default_has_bn(name)
    if bn and not has_bn:
        raise ConfigError(f"{name} has no BatchNorm layers: build it without BN (--no-bn, "
                          "bn: [no-bn])")
    if bn or not has_bn:
        return {}
    try:
        with torch.device("meta"):
            _tv_builder(name)(weights=None, num_classes=10, norm_layer=nn.Identity)
    except TypeError:
        plain = f" (torchvision:{short[:-3]} is its BN-free twin)" if short.endswith("_bn") \
            else ""
        raise ConfigError(f"{name} cannot be built without BN: its builder takes no "
                          f"norm_layer{plain}") from None
    return {"norm_layer": nn.Identity}


def check_torchvision(name: str, bn: bool | None = None) -> str:
    """``name`` if torchvision builds it (with BN-ness ``bn`` when given), else ConfigError."""
    _tv_builder(name)
    if bn is not None:
        _tv_kwargs(name, bn)
    return name


def _first_conv(model: nn.Module) -> tuple[nn.Module, str, nn.Conv2d]:
    for full, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            parent_name, _, attr = full.rpartition(".")
            return model.get_submodule(parent_name), attr, module
    raise ConfigError("the model has no Conv2d layer to take the input channels")


def _adapt_stem(model: nn.Module, in_channels: int, input_size: int) -> None:
    """The first conv for ``in_channels``, and the small-input stem for small inputs."""
    parent, attr, conv = _first_conv(model)
    small = input_size <= SMALL_INPUT
    kernel, stride, padding = conv.kernel_size, conv.stride, conv.padding
    if small:
        stride = (1, 1)
        if kernel == (7, 7):
            kernel, padding = (3, 3), (1, 1)
    if in_channels != conv.in_channels or small:
        new = nn.Conv2d(in_channels, conv.out_channels, kernel, stride=stride, padding=padding,
                        dilation=conv.dilation, groups=1, bias=conv.bias is not None)
        nn.init.kaiming_normal_(new.weight, mode="fan_out", nonlinearity="relu")
        if new.bias is not None:
            nn.init.zeros_(new.bias)
        setattr(parent, attr, new)
    if small and isinstance(getattr(model, "maxpool", None), nn.MaxPool2d):
        model.maxpool = nn.Identity()
    if small:
        _drop_small_pools(model, in_channels, input_size)


POOLS = (nn.MaxPool2d, nn.AvgPool2d)


@torch.no_grad()
def _drop_small_pools(model: nn.Module, in_channels: int, input_size: int) -> None:
    """Replace each pool that a small input reaches with a map smaller than its window (and
    that would raise) by an identity: forward one blank image, drop the failing pool, again."""
    was_training = model.training
    model.eval()
    try:
        for _ in range(sum(isinstance(m, POOLS) for m in model.modules()) + 1):
            seen: list[tuple[str, int, int]] = []
            hooks = [m.register_forward_pre_hook(
                lambda mod, args, name=name, seen=seen: seen.append(
                    (name, args[0].shape[-1], _window(mod))))
                for name, m in model.named_modules() if isinstance(m, POOLS)]
            try:
                model(torch.zeros(1, in_channels, input_size, input_size))
                return
            except RuntimeError:
                small = [name for name, size, window in seen if size < window]
                if not small:
                    raise
                parent, _, attr = small[-1].rpartition(".")
                setattr(model.get_submodule(parent), attr, nn.Identity())
            finally:
                for h in hooks:
                    h.remove()
    finally:
        model.train(was_training)


def _window(pool: nn.Module) -> int:
    k = pool.kernel_size
    return k if isinstance(k, int) else k[0]


def _add_conv_biases(model: nn.Module) -> None:
    """Every conv without a bias gets one (a BN-free conv has no BN shift to stand for it)."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d) and m.bias is None:
            m.bias = nn.Parameter(torch.zeros(m.out_channels, device=m.weight.device))


def build_torchvision(name: str, *, bn: bool, num_classes: int, in_channels: int,
                      input_size: int) -> nn.Module:
    """torchvision builder ``name`` for the dataset's shape (see the module docstring)."""
    kwargs = _tv_kwargs(name, bn)
    try:
        model = _tv_builder(name)(weights=None, num_classes=num_classes, **kwargs)
        _adapt_stem(model, in_channels, input_size)
    except ConfigError:
        raise
    except Exception as e:  # a builder refusing the shape (e.g. a ViT's image size)
        raise ConfigError(f"{name} could not be built for {num_classes} classes "
                          f"({type(e).__name__}: {e})") from None
    if not bn and kwargs:
        _add_conv_biases(model)
    return model


# ------------------------------------------------------------------------ user factories


def _split_factory(name: str) -> tuple[str, str]:
    where, _, func = name.rpartition(":")
    if not where or not func.isidentifier():
        raise ConfigError(f"{name!r}: name a factory as package.module:function or "
                          "path/to/file.py:function")
    return where, func


_FILE_MODULES: dict[tuple[str, float], object] = {}


def _import(where: str, name: str):
    if where.endswith(".py"):
        path = Path(where).resolve()
        if not path.is_file():
            raise ConfigError(f"{name}: no such file {where}")
        key = (str(path), path.stat().st_mtime)
        if key not in _FILE_MODULES:
            mod_name = f"hwsim_user_{abs(hash(str(path))):x}"
            spec = importlib.util.spec_from_file_location(mod_name, path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[mod_name] = module  # dataclasses and pickling look modules up here
            try:
                spec.loader.exec_module(module)
            except Exception as e:
                del sys.modules[mod_name]
                raise ConfigError(f"{name}: importing {where} raised {type(e).__name__}: "
                                  f"{e}") from None
            _FILE_MODULES[key] = module
        return _FILE_MODULES[key]
    try:
        return importlib.import_module(where)
    except ModuleNotFoundError as e:
        raise ConfigError(f"{name}: no module named {e.name!r} (is it installed or on "
                          "PYTHONPATH?)") from None
    except Exception as e:
        raise ConfigError(f"{name}: importing {where} raised {type(e).__name__}: {e}") from None


def factory_of(name: str) -> Callable[..., nn.Module]:
    """The user's factory function named by ``name`` (imports its module).

    Raises:
        ConfigError: malformed reference, missing file, module or function.
    """
    where, func = _split_factory(name)
    module = _import(where, name)
    factory = getattr(module, func, None)
    if factory is None:
        raise ConfigError(f"{name}: {where} has no function {func!r}")
    if not callable(factory):
        raise ConfigError(f"{name}: {func!r} in {where} is not callable")
    return factory


def build_factory(name: str, *, bn: bool, num_classes: int, in_channels: int,
                  input_size: int) -> nn.Module:
    """Call the user's factory with the keywords it takes; check what it returns."""
    factory = factory_of(name)
    given = {"num_classes": num_classes, "in_channels": in_channels, "input_size": input_size,
             "bn": bn}
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):  # a builtin or C callable: give it everything
        params = {}
    takes_all = not params or any(p.kind is p.VAR_KEYWORD for p in params.values())
    kwargs = given if takes_all else {k: v for k, v in given.items() if k in params}
    try:
        model = factory(**kwargs)
    except Exception as e:
        raise ConfigError(f"{name} raised {type(e).__name__}: {e}") from None
    if not isinstance(model, nn.Module):
        raise ConfigError(f"{name} returned {type(model).__name__}, not a torch nn.Module")
    if _has_bn(model) != bn:
        raise ConfigError(
            f"{name} returned a model {'with' if _has_bn(model) else 'without'} BatchNorm "
            f"layers, but it was asked for one {'with' if bn else 'without'} "
            f"({'it takes a bn argument' if 'bn' in kwargs else 'it takes no bn argument'})")
    return model


def build_external(name: str, **kwargs) -> nn.Module:
    """Build reference ``name`` (torchvision or a user's factory)."""
    if name.startswith(TORCHVISION):
        return build_torchvision(name, **kwargs)
    return build_factory(name, **kwargs)


def check_external(name: str, bn: bool | None = None) -> str:
    """``name`` if it can be built: a torchvision name (checked with ``bn`` when given) or an
    importable factory. Raises ConfigError."""
    if name.startswith(TORCHVISION):
        return check_torchvision(name, bn)
    factory_of(name)
    return name
