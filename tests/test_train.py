import pytest
import torch

from hwsim.checkpoint import load_checkpoint
from hwsim.inference.evaluate import evaluate
from hwsim.training.config import TrainConfig
from hwsim.training.loop import lr_at, train

# Floors after 3 epochs (126 SGD steps) on the 1347 training digits; measured: BN ~0.97,
# no-BN ~0.93 (seed 0). A broken model, loss or data pipeline stays near 0.10.
FLOORS = {True: 0.90, False: 0.80}


@pytest.mark.parametrize("bn", [True, False], ids=["bn", "nobn"])
def test_cnn_learns_digits(bn, cnn_bn_digits, cnn_nobn_digits, digits):
    path, result = cnn_bn_digits if bn else cnn_nobn_digits
    assert result.test_accuracy >= FLOORS[bn]
    # the accuracy stored equals a fresh evaluation of the stored weights
    ckpt = load_checkpoint(path)
    acc = evaluate(ckpt.build_model(), digits.test_x, digits.test_y, ckpt.normalization)
    assert acc == pytest.approx(result.test_accuracy)


def test_same_seed_gives_byte_identical_checkpoints(digits, tmp_path):
    from hwsim.checkpoint import save_checkpoint

    cfg = TrainConfig("cnn", False, "digits", epochs=1, batch_size=64, seed=1)
    paths = [tmp_path / "a.pt", tmp_path / "b.pt"]
    for path in paths:
        save_checkpoint(train(cfg, digits, progress=False).checkpoint, path)
    assert paths[0].read_bytes() == paths[1].read_bytes()


def test_checkpoint_and_model_come_back_in_plain_layout(cnn_bn_digits):
    # training runs channels-last on a CPU; what it hands on must not
    _, result = cnn_bn_digits
    assert all(t.is_contiguous() for t in result.checkpoint.state_dict.values())
    assert all(p.is_contiguous() for p in result.model.parameters())


def test_same_seed_gives_identical_weights(digits):
    cfg = TrainConfig("cnn", True, "digits", epochs=1, batch_size=64, seed=3)
    a = train(cfg, digits, progress=False).checkpoint.state_dict
    b = train(cfg, digits, progress=False).checkpoint.state_dict
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    c = train(TrainConfig("cnn", True, "digits", epochs=1, batch_size=64, seed=4), digits,
              progress=False).checkpoint.state_dict
    assert not torch.equal(a["0.weight"], c["0.weight"])


def test_schedule_warms_up_then_decays_to_zero():
    lrs = [lr_at(s, 100, 0.1, 0.05) for s in range(100)]
    assert lrs[0] == pytest.approx(0.02) and max(lrs) == pytest.approx(0.1)
    assert lrs == sorted(lrs[:5]) + sorted(lrs[5:], reverse=True)
    assert lrs[-1] < 1e-3


def test_config_records_every_setting():
    d = TrainConfig("cnn", False, "digits", lr=0.2).to_dict()
    assert d["lr"] == 0.2 and d["grad_clip"] == 2.0 and d["bn"] is False and d["epochs"] == 30
