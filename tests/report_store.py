"""A hand-written results store in the real on-disk format, for the report's tests (no training).

Three architectures on cifar10 with BN-layer counts 13 (vgg16), 19 (resnet20) and 43
(resnet44); BN loses more normalised accuracy the more BN layers it has, and folding gets
back part of the loss. Two hand-chosen cases pin the verdicts: resnet44 at gaussian η = 0.5
(BN kept clearly worse, folding clearly helps) and vgg16 on pcm at t = 1 s (overlapping
distributions: no significant difference).
"""

from __future__ import annotations

import math
from pathlib import Path

from hwsim.study.store import STORE_NAME, ModelKey, Store

DIGITAL = {"bn": 0.92, "no-bn": 0.90}
BN_LAYERS = {"resnet44": 43, "vgg16": 13, "resnet20": 19}
ETAS = (0.0, 0.5)
TIMES = (1.0, 86400.0, 365 * 86400.0)
JITTER = (0.0, 0.01, -0.01, 0.005)  # per repeat
# (arch, variant) -> normalised-accuracy loss per unit of noise: BN loses more with more layers
LOSS = {("resnet44", "no BN"): 0.1, ("resnet44", "BN kept"): 0.8, ("resnet44", "BN folded"): 0.4,
        ("vgg16", "no BN"): 0.1, ("vgg16", "BN kept"): 0.3, ("vgg16", "BN folded"): 0.2,
        ("resnet20", "no BN"): 0.1, ("resnet20", "BN kept"): 0.5, ("resnet20", "BN folded"): 0.3}
# Hand-chosen accuracies of the two constructed cases.
R44_ETA05 = {"no BN": [0.81, 0.82, 0.80, 0.83], "BN kept": [0.30, 0.35, 0.32, 0.33],
             "BN folded": [0.60, 0.62, 0.58, 0.61]}
VGG_PCM_1S = {"no BN": [0.85, 0.80, 0.88, 0.83], "BN kept": [0.86, 0.79, 0.84, 0.87],
              "BN folded": [0.85, 0.86, 0.80, 0.84]}
MODES = {"no BN": ("no-bn", "none"), "BN kept": ("bn", "keep"), "BN folded": ("bn", "fold")}

PCM_MAPPING = {"max_input_size": 512, "max_output_size": 512, "weight_scaling_omega": 1.0,
               "weight_scaling_columnwise": False, "digital_bias": True}
PRESETS = {
    "gaussian": {"name": "gaussian", "description": "additive weight noise",
                 "source": "Fagbohungbe & Qian 2022", "noise_model": {"type": "none"},
                 "forward": {"is_perfect": True},
                 "mapping": dict(PCM_MAPPING),
                 "weight_noise": {"type": "additive", "eta": 0.1}},
    "pcm": {"name": "pcm", "description": "phase-change memory", "source": "aihwkit",
            "noise_model": {"type": "pcm"}, "forward": {"is_perfect": False},
            "mapping": dict(PCM_MAPPING), "weight_noise": None},
}
# pcm with per-column weight scaling: the same device, another mapping
PRESETS["pcm-column"] = dict(PRESETS["pcm"], name="pcm-column",
                             mapping=dict(PCM_MAPPING, weight_scaling_columnwise=True))


def accuracy(arch, variant, preset, level, repeat) -> float:
    bn = MODES[variant][0]
    if arch == "resnet44" and preset == "gaussian" and level == 0.5:
        return R44_ETA05[variant][repeat]
    if arch == "vgg16" and preset == "pcm" and level == 1.0:
        return VGG_PCM_1S[variant][repeat]
    if preset == "gaussian":
        x = level
    else:  # pcm: loss grows with log10 of the time
        x = math.log10(level) / 10
    loss = LOSS[(arch, variant)]
    if preset == "pcm-column" and variant == "BN folded":
        loss = LOSS[(arch, "BN kept")]  # per-column mapping: folding changes nothing
    return DIGITAL[bn] * (1 - loss * x) + (JITTER[repeat] if x else 0.0)


def make_store(run_dir: Path, archs=("resnet44", "vgg16", "resnet20"), repeats=4,
               meta=True, presets=("gaussian", "pcm"), digital=None, learned_factor=None,
               dataset="cifar10") -> Path:
    """Write the store; ``digital`` overrides the digital accuracy per (arch, bn), and a
    model below chance keeps its analog accuracy at its digital one (it never learned)."""
    digital = digital or {}
    with Store(run_dir / STORE_NAME) as store:
        for arch in archs:
            for bn in ("bn", "no-bn"):
                store.add_model(ModelKey(dataset, arch, bn, 0),
                                digital_accuracy=digital.get((arch, bn), DIGITAL[bn]),
                                n_test=200, full_test_accuracy=DIGITAL[bn] + 0.01,
                                bn_layers=BN_LAYERS[arch] if bn == "bn" else 0,
                                checkpoint=f"checkpoints/{arch}-{bn}.pt",
                                checkpoint_sha256="0" * 64, train_seconds=12.5)
            rows = []
            for variant, (bn, mode) in MODES.items():
                key = ModelKey(dataset, arch, bn, 0)
                stuck = digital.get((arch, bn))
                for r in range(repeats):
                    for preset in presets:
                        levels = ETAS if preset == "gaussian" else TIMES
                        for level in levels:
                            eta, t = (level, None) if preset == "gaussian" else (None, level)
                            acc = (stuck if stuck is not None and stuck < 0.2
                                   else accuracy(arch, variant, preset, level, r))
                            rows.append((key.cell(bn_mode=mode, preset=preset, eta=eta, t=t,
                                                  repeat=r), acc, 200, "aihwkit"))
            store.add_cells(rows)
        if meta:
            study = {"name": "fixture", "description": "hand-made results",
                     "datasets": {dataset: {"epochs": 2, "batch_size": 128, "lr": 0.1,
                                            "train_subset": 1000, "test_subset": 200}},
                     "architectures": list(archs), "bn": ["bn", "no-bn"],
                     "bn_modes": ["keep", "fold"], "presets": list(presets),
                     "times": list(TIMES), "etas": list(ETAS), "repeats": repeats,
                     "seeds": [0], "engine": "aihwkit"}
            if learned_factor is not None:
                study["learned_factor"] = learned_factor
            store.set_meta("study", study)
            store.set_meta("presets", {p: PRESETS[p] for p in presets})
            store.set_meta("datasets", {dataset: {"n_test": 200, "test_total": 10000,
                                                  "source": "CIFAR-10 python"}})
            store.set_meta("versions", {"hwsim": "0.1.0", "aihwkit": "1.1.0", "torch": "2.10.0",
                                        "python": "3.12"})
            store.set_meta("timing", {"wall_seconds": 95.0})
    return run_dir
