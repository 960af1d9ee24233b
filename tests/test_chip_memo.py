"""The chips of one model built through a ModelMemo (what a study's units do): the same
cells as chips built on their own, for every BN mode, preset and eta and both engines; the
shared digital model is never changed by the chips built on it; BN kept and recal share one
digital model, fold has its own; another model key drops what the memo held."""

from __future__ import annotations

import pytest
import torch

from hwsim.analog.presets import load_preset
from hwsim.checkpoint import load_checkpoint
from hwsim.inference.chip import ModelMemo, build_chip
from hwsim.inference.montecarlo import run_repeat

TIMES = [1.0, 86400.0]


def _jobs():
    pcm, gaussian = load_preset("pcm"), load_preset("gaussian")
    for mode in ("keep", "fold", "recal"):
        yield mode, pcm
        for eta in (0.2, 1.0):
            yield mode, gaussian.with_eta(eta)


def _cells(chip, data, repeat=0):
    x, y = data.test_subset(120)
    times = TIMES if chip.preset.time_dependent else [None]
    records = run_repeat(chip.engine, repeat, times, x, y, chip.checkpoint.normalization,
                         seed=3, recal=chip.recalibration)
    return [r.accuracy for r in records]


@pytest.mark.parametrize("engine", ["fast", "aihwkit"])
def test_memo_chips_are_the_chips_built_alone(engine, cnn_bn_digits, digits, one_thread):
    ckpt = load_checkpoint(cnn_bn_digits[0])
    before = {k: v.clone() for k, v in ckpt.build_model().state_dict().items()}
    memo = ModelMemo()
    jobs = list(_jobs()) if engine == "fast" else [("keep", load_preset("pcm")),
                                                   ("recal", load_preset("pcm"))]
    for mode, preset in jobs:
        kw = dict(preset=preset, bn_mode=mode, engine=engine, calib_size=64, seed=1)
        alone = build_chip(ckpt, digits, **kw)
        shared = build_chip(ckpt, digits, memo=memo, memo_key="cnn", **kw)
        assert shared.checkpoint.preset == alone.checkpoint.preset
        assert shared.checkpoint.bn_mode == alone.checkpoint.bn_mode == mode
        assert shared.note == alone.note
        assert _cells(shared, digits) == _cells(alone, digits), (mode, preset.name)
    # the digital model the memo shares is still the checkpoint's
    for (folded, _), model in memo._models.items():
        if not folded:
            after = model.state_dict()
            assert all(torch.equal(after[k], v) for k, v in before.items())


def test_memo_shares_models_by_weights_and_forgets_another_key(cnn_bn_digits, digits):
    ckpt = load_checkpoint(cnn_bn_digits[0])
    memo = ModelMemo()
    pcm = load_preset("pcm")
    keep = build_chip(ckpt, digits, preset=pcm, bn_mode="keep", memo=memo, memo_key="a")
    recal = build_chip(ckpt, digits, preset=load_preset("gaussian").with_eta(0.5),
                       bn_mode="recal", memo=memo, memo_key="a")
    fold = build_chip(ckpt, digits, preset=pcm, bn_mode="fold", memo=memo, memo_key="a")
    assert keep.engine.digital is recal.engine.digital
    assert fold.engine.digital is not keep.engine.digital
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fold.engine.digital.modules())
    other = build_chip(ckpt, digits, preset=pcm, bn_mode="keep", memo=memo, memo_key="b")
    assert other.engine.digital is not keep.engine.digital
    assert memo.key == "b" and len(memo._models) == 1
