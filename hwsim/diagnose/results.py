"""A diagnosis as plain records, and its summaries over chips (paired: every configuration
of one chip and time is measured on that same chip)."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from hwsim import stats
from hwsim.diagnose.layers import LayerInfo

# Per (t, repeat, BN layer): the numbers of hwsim.diagnose.bnstats, each a float.
BN_FIELDS = ("shift", "var_ratio", "digital_shift", "digital_var_ratio", "chip_shift",
             "chip_var_ratio", "recal_shift", "recal_var_ratio")


@dataclass(frozen=True)
class LayerLoss:
    """One layer's share of the loss at one time, in accuracy (0..1), over chips.

    ``only``: digital accuracy minus that of the chip with only this layer analog;
    ``but``: accuracy of the chip with every layer analog but this one minus that of the
    whole chip (what making this layer exact recovers). Both are paired tests over chips.
    """

    layer: LayerInfo
    only: stats.Test
    but: stats.Test

    @property
    def score(self) -> float:
        """The rank key: the mean of the two measures (the layer's loss alone, and within the
        whole chip, where the layers' errors compound); NaN parts are left out."""
        parts = [v for v in (self.only.diff, self.but.diff) if v == v]
        return sum(parts) / len(parts) if parts else float("nan")


@dataclass(frozen=True)
class BNLayerStat:
    """One BN layer's statistics at one time, each field summarised over chips."""

    name: str
    depth: int  # position among the BN layers, in forward order
    values: dict[str, stats.Stat]


@dataclass
class Diagnosis:
    """Everything one diagnosis measured, as plain records (JSON-ready with :meth:`to_dict`).

    ``sensitivity``: ``{t, repeat, config, layer, accuracy}`` with config ``all`` (every
    layer analog), ``only`` or ``but`` (of ``layer``); ``bn``: ``{t, repeat, layer, depth}``
    and :data:`BN_FIELDS`; ``depth``: ``{model, t, repeat, layer, depth, rel_error}`` with
    model ``main`` or ``compare`` (the ``--compare`` checkpoint).
    """

    meta: dict
    layers: list[LayerInfo]
    digital_accuracy: float
    sensitivity: list[dict] = field(default_factory=list)
    bn: list[dict] = field(default_factory=list)
    depth: list[dict] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def times(self) -> list[float | None]:
        return sorted({r["t"] for r in self.sensitivity},
                      key=lambda t: -1.0 if t is None else t)

    def layer_losses(self, t: float | None) -> list[LayerLoss]:
        """Every layer's loss at ``t``, ranked by :attr:`LayerLoss.score`, largest first."""
        acc: dict[tuple, dict[int, float]] = defaultdict(dict)
        for r in self.sensitivity:
            if r["t"] == t:
                acc[(r["config"], r["layer"])][r["repeat"]] = r["accuracy"]
        whole = acc[("all", "")]
        chips = sorted(whole)
        out = []
        for info in self.layers:
            only, but = acc[("only", info.name)], acc[("but", info.name)]
            ks = [k for k in chips if k in only and k in but]
            out.append(LayerLoss(
                info,
                stats.paired_test([self.digital_accuracy] * len(ks), [only[k] for k in ks]),
                stats.paired_test([but[k] for k in ks], [whole[k] for k in ks])))
        return sorted(out, key=lambda loss: (-_num(loss.score), loss.layer.depth))

    def whole_loss(self, t: float | None) -> stats.Stat:
        """Digital accuracy minus that of the whole chip, over chips."""
        return stats.summarize(self.digital_accuracy - r["accuracy"] for r in self.sensitivity
                               if r["t"] == t and r["config"] == "all")

    def bn_profile(self, t: float | None) -> list[BNLayerStat]:
        """Every BN layer's statistics at ``t`` (in forward order), summarised over chips."""
        rows: dict[tuple[int, str], list[dict]] = defaultdict(list)
        for r in self.bn:
            if r["t"] == t:
                rows[(r["depth"], r["layer"])].append(r)
        return [BNLayerStat(name, depth, {f: stats.summarize(r[f] for r in rs)
                                          for f in BN_FIELDS})
                for (depth, name), rs in sorted(rows.items())]

    def depth_profile(self, t: float | None,
                      model: str = "main") -> list[tuple[int, str, stats.Stat]]:
        """(depth, layer, relative output error over chips) of every weight layer at ``t``."""
        rows: dict[tuple[int, str], list[float]] = defaultdict(list)
        for r in self.depth:
            if r["t"] == t and r["model"] == model:
                rows[(r["depth"], r["layer"])].append(r["rel_error"])
        return [(d, n, stats.summarize(v)) for (d, n), v in sorted(rows.items())]

    def to_dict(self) -> dict:
        return {"meta": self.meta, "layers": [info.to_dict() for info in self.layers],
                "digital_accuracy": self.digital_accuracy, "sensitivity": self.sensitivity,
                "bn": self.bn, "depth": self.depth, "seconds": self.seconds}

    @classmethod
    def from_dict(cls, d: dict) -> Diagnosis:
        return cls(d["meta"], [LayerInfo.from_dict(x) for x in d["layers"]],
                   d["digital_accuracy"], d["sensitivity"], d["bn"], d["depth"], d["seconds"])


def _num(v: float) -> float:
    return -1e9 if v != v else v  # NaN last
