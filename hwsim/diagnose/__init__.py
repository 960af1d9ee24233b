"""Where the accuracy goes: per-layer sensitivity, BN statistics on the chip and the error
along the depth (``hwsim diagnose``; usable from a notebook).

>>> from hwsim.diagnose import DiagnoseSettings, diagnose
>>> diag = diagnose(ckpt, data, load_preset("pcm"), DiagnoseSettings(repeats=3))
>>> diag.layer_losses(diag.times[-1])[:3]  # the three layers that lose most

The results (:class:`Diagnosis`) need no simulator: the report reads them without importing
the engines, so :func:`diagnose` and its settings (``hwsim.diagnose.run``) load on first use.
"""

from hwsim.diagnose.layers import LayerInfo, exact_layers, layer_inventory
from hwsim.diagnose.results import BN_FIELDS, BNLayerStat, Diagnosis, LayerLoss

_RUN = ("DiagnoseSettings", "diagnose", "evaluations")


def __getattr__(name: str):
    if name in _RUN:
        from hwsim.diagnose import run

        return getattr(run, name)
    raise AttributeError(f"module 'hwsim.diagnose' has no attribute {name!r}")


__all__ = ["BN_FIELDS", "BNLayerStat", "DiagnoseSettings", "Diagnosis", "LayerInfo",
           "LayerLoss", "diagnose", "evaluations", "exact_layers", "layer_inventory"]
