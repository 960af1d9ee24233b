"""BatchNorm on the chip: the BN modes, and folding each eval-mode BN into its conv/linear.

``keep`` leaves BN digital between analog layers with the statistics measured in training;
``fold`` absorbs it into the preceding conv's (or linear's) weights before mapping (below);
``recal`` keeps it digital and re-estimates its statistics on the chip
(:mod:`hwsim.analog.recalibrate`).

``y = gamma * (conv(x) - mu) / sqrt(var + eps) + beta`` equals a conv with weights scaled by
``s = gamma / sqrt(var + eps)`` per output channel and bias ``(b - mu) * s + beta``
(torch's ``fuse_conv_bn_eval`` / ``fuse_linear_bn_eval`` compute it). Which BN follows
which layer is read from the model's graph (``torch.fx``), whatever the module nesting: a BN
whose input is a conv (Linear for ``BatchNorm1d``) used by nothing else is folded; a BN
after anything else (an addition, a pool, the input of a pre-activation block) stays a
digital BN, and :class:`Folding` says which and why.

The folded model keeps the original model's classes and module names: the conv is replaced
by its fused copy and the BN by ``nn.Identity``, so its ``state_dict`` is the original's
without the folded BNs' entries (plus conv biases), and folding a freshly built model of the
same architecture gives the same structure: how a folded checkpoint is rebuilt.
"""

from __future__ import annotations

import copy
import operator
from dataclasses import dataclass

import torch
import torch.fx
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.conv import _ConvNd, _ConvTransposeNd
from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_linear_bn_eval

from hwsim.errors import ConfigError

BN_MODES = ("keep", "fold", "recal")

_ADDITIONS = {operator.add, operator.iadd, torch.add, torch.Tensor.add, "add", "add_"}
_CONCATS = {torch.cat, torch.concat, torch.stack}


def check_bn_mode(mode: str) -> str:
    if mode not in BN_MODES:
        raise ConfigError(f"unknown BN mode {mode!r}; choose one of: {', '.join(BN_MODES)}")
    return mode


@dataclass(frozen=True)
class Folding:
    """What :func:`fold_batchnorm` did: the BN-folded model and which BN went where.

    ``folded`` pairs each folded BN with the layer that absorbed it; ``kept`` pairs each BN
    left digital with the reason (plain strings, so a checkpoint or report can store them).
    """

    model: nn.Module
    folded: tuple[tuple[str, str], ...] = ()  # (bn, conv/linear it was folded into)
    kept: tuple[tuple[str, str], ...] = ()  # (bn, why it stays digital)

    @property
    def n_bn(self) -> int:
        return len(self.folded) + len(self.kept)

    @property
    def kept_share(self) -> float:
        """The share of the model's BN layers left digital (0 without BN)."""
        return len(self.kept) / self.n_bn if self.n_bn else 0.0

    def to_dict(self) -> dict:
        return {"folded": [list(p) for p in self.folded], "kept": [list(p) for p in self.kept],
                "kept_share": self.kept_share}

    def summary(self) -> str:
        """One line: how many BN layers were folded, and which stay digital (and why)."""
        return describe_folding(self.to_dict())


def describe_folding(d: dict) -> str:
    """:meth:`Folding.summary` from its ``to_dict`` (as a checkpoint stores it)."""
    folded, kept = d["folded"], d["kept"]
    n = len(folded) + len(kept)
    line = f"BN fold: {len(folded)} of {n} BatchNorm layers folded"
    if kept:
        shown = "; ".join(f"{bn} ({why})" for bn, why in kept[:8])
        more = f"; and {len(kept) - 8} more" if len(kept) > 8 else ""
        line += (f"; {len(kept)} ({100 * d['kept_share']:.0f}%) stay digital: {shown}{more}")
    return line


def trace(model: nn.Module) -> torch.fx.Graph:
    """``model``'s forward graph (``torch.fx``; torch's own layers are leaves).

    Raises:
        ConfigError: the forward cannot be traced symbolically (data-dependent control flow).
    """
    try:
        return torch.fx.Tracer().trace(model)
    except Exception as e:  # fx raises many types for code it cannot trace
        first = (str(e).strip().splitlines() or [""])[0][:200]
        raise ConfigError(f"cannot fold BatchNorm in {type(model).__name__}: its forward "
                          f"cannot be traced by torch.fx ({type(e).__name__}: {first})") from None


def _producer(node: torch.fx.Node, modules: dict[str, nn.Module]) -> str:
    """What ``node`` computes, in words (why a BN after it cannot be folded)."""
    if node.op == "placeholder":
        return "follows the model input"
    if node.op == "call_module":
        return f"follows {type(modules[node.target]).__name__} {node.target!r}"
    if node.op in ("call_function", "call_method"):
        if node.target in _ADDITIONS:
            return "follows an addition"
        if node.target in _CONCATS:
            return "follows a concatenation"
        name = getattr(node.target, "__name__", str(node.target))
        return f"follows {name}()"
    return f"follows {node.op} {node.target}"


def _fold_reason(bn_node: torch.fx.Node, modules: dict[str, nn.Module],
                 calls: dict[str, int]) -> tuple[str | None, str]:
    """(the layer to fold ``bn_node`` into, "") or (None, why it cannot be folded)."""
    bn = modules[bn_node.target]
    if calls[bn_node.target] > 1:
        return None, "called more than once"
    if bn.running_mean is None or bn.running_var is None:
        return None, "no running statistics (track_running_stats=False)"
    src = bn_node.args[0] if bn_node.args else None
    if not isinstance(src, torch.fx.Node):
        return None, "input is not a tensor node"
    layer = modules.get(src.target) if src.op == "call_module" else None
    foldable = (isinstance(layer, _ConvNd)
                or (isinstance(layer, nn.Linear) and isinstance(bn, nn.BatchNorm1d)
                    and bn.num_features == layer.out_features))
    if not foldable:
        return None, _producer(src, modules)
    if len(src.users) > 1:
        return None, f"the output of {src.target!r} is also used elsewhere"
    if calls[src.target] > 1:
        return None, f"{src.target!r} is called more than once"
    return src.target, ""


def _set(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)


def _bn_analysis(model: nn.Module) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """The BN layers of ``model`` in module order: ``(bn, layer it may be folded into)`` for
    those whose input is a conv/linear used by nothing else, ``(bn, why not)`` for the rest.

    Raises:
        ConfigError: the model cannot be traced (see :func:`trace`).
    """
    bns = [n for n, m in model.named_modules() if isinstance(m, _BatchNorm)]
    if not bns:
        return [], []
    graph = trace(model)
    modules = dict(model.named_modules())
    calls: dict[str, int] = {}
    for node in graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
    pairs, kept = [], []
    seen = set()
    for node in graph.nodes:
        if node.op != "call_module" or not isinstance(modules[node.target], _BatchNorm):
            continue
        if node.target in seen:
            continue
        seen.add(node.target)
        target, why = _fold_reason(node, modules, calls)
        if target is None:
            kept.append((node.target, why))
        else:
            pairs.append((node.target, target))
    kept += [(n, "not used by the forward pass") for n in bns if n not in seen]
    order = {n: i for i, n in enumerate(bns)}
    return sorted(pairs, key=lambda p: order[p[0]]), sorted(kept, key=lambda p: order[p[0]])


def bn_pairs(model: nn.Module) -> list[tuple[str, str]]:
    """``(bn, conv/linear)`` for every BN of ``model`` whose input is that layer's output and
    nothing else uses it (what :func:`fold_batchnorm` folds; the fast engine's convs absorb
    the same BNs at run time).

    Raises:
        ConfigError: the model cannot be traced (see :func:`trace`).
    """
    return _bn_analysis(model)[0]


@torch.no_grad()
def fold_batchnorm(model: nn.Module) -> Folding:
    """A copy of ``model`` (eval mode) with every foldable BN folded, and what was folded.

    Raises:
        ConfigError: the model cannot be traced (see :func:`trace`).
    """
    model = copy.deepcopy(model).eval()
    pairs, kept = _bn_analysis(model)
    for bn_name, target in pairs:
        layer, bn = model.get_submodule(target), model.get_submodule(bn_name)
        fused = (fuse_linear_bn_eval(layer, bn) if isinstance(layer, nn.Linear)
                 else fuse_conv_bn_eval(layer, bn, transpose=isinstance(layer, _ConvTransposeNd)))
        _set(model, target, fused)
        _set(model, bn_name, nn.Identity())
    return Folding(model, tuple(pairs), tuple(kept))


def fold_bn(model: nn.Module) -> nn.Module:
    """:func:`fold_batchnorm`'s model: a copy of ``model`` with every foldable BN folded."""
    return fold_batchnorm(model).model
