"""Where the accuracy goes: per-layer sensitivity, BN statistics on the chip and the error
along the depth (``hwsim diagnose``; usable from a notebook).

>>> from hwsim.diagnose import DiagnoseSettings, diagnose
>>> diag = diagnose(ckpt, data, load_preset("pcm"), DiagnoseSettings(repeats=3))
>>> diag.layer_losses(diag.times[-1])[:3]  # the three layers that lose most
"""

from hwsim.diagnose.layers import LayerInfo, exact_layers, layer_inventory
from hwsim.diagnose.results import BN_FIELDS, BNLayerStat, Diagnosis, LayerLoss
from hwsim.diagnose.run import DiagnoseSettings, diagnose, evaluations

__all__ = ["BN_FIELDS", "BNLayerStat", "DiagnoseSettings", "Diagnosis", "LayerInfo",
           "LayerLoss", "diagnose", "evaluations", "exact_layers", "layer_inventory"]
