import json

import pytest
import torch

from hwsim.analog.presets import load_preset
from hwsim.checkpoint import load_checkpoint, save_checkpoint
from hwsim.errors import CheckpointError, SimulationError
from hwsim.inference.analog import to_analog
from hwsim.inference.montecarlo import InferSettings, run_inference
from hwsim.inference.results import Record, summarize_records, write_results

ENGINE = "aihwkit"


def analog(path, preset, bn_mode="keep", eta=None):
    p = load_preset(preset)
    if eta is not None:
        p = p.with_eta(eta)
    return to_analog(load_checkpoint(path), p, bn_mode).checkpoint


def infer(ckpt, data, times=(1.0,), repeats=3, seed=0, engine=ENGINE):
    return run_inference(ckpt, data, InferSettings(times=tuple(times), repeats=repeats, seed=seed,
                                                   engine=engine), progress=False)


@pytest.mark.parametrize("bn_mode", ["keep", "fold"])
def test_ideal_equals_digital(cnn_bn_digits, digits, bn_mode):
    path, trained = cnn_bn_digits
    result = infer(analog(path, "ideal", bn_mode), digits, repeats=2)
    assert result.digital_accuracy == trained.test_accuracy
    assert all(r.accuracy == trained.test_accuracy for r in result.records)
    assert [r.t_inference for r in result.records] == [None, None]  # no drift: one eval each


def test_gaussian_eta_zero_is_digital_and_accuracy_falls_with_eta(cnn_nobn_digits, digits):
    path, trained = cnn_nobn_digits
    means = []
    for eta in (0.0, 0.5, 1.0, 2.0):
        result = infer(analog(path, "gaussian", eta=eta), digits, repeats=4)
        if eta == 0:
            assert all(r.accuracy == trained.test_accuracy for r in result.records)
        means.append(result.summary[0].mean)
    assert means[0] > means[1] > means[2] > means[3]
    assert means[3] < 0.6 * means[0]


def test_multiplicative_noise(cnn_nobn_digits, digits):
    path, trained = cnn_nobn_digits
    zero = infer(analog(path, "gaussian-mult", eta=0.0), digits, repeats=2)
    assert all(r.accuracy == trained.test_accuracy for r in zero.records)
    noisy = infer(analog(path, "gaussian-mult", eta=1.0), digits, repeats=4).summary[0]
    assert noisy.mean + noisy.ci95 < trained.test_accuracy


@pytest.mark.parametrize("bn_mode", ["keep", "fold"])
def test_pcm_loses_accuracy_over_a_year(cnn_bn_digits, digits, bn_mode):
    path, _ = cnn_bn_digits
    result = infer(analog(path, "pcm", bn_mode), digits, times=(1.0, 31536000.0), repeats=4)
    s1, s1y = result.summary
    assert (s1.t_inference, s1y.t_inference) == (1.0, 31536000.0)
    assert s1y.mean <= s1.mean
    assert 0.5 < s1.mean <= 1.0 and s1.n == 4 and s1.ci95 > 0


def test_same_seed_same_numbers(cnn_bn_digits, digits):
    path, _ = cnn_bn_digits
    ckpt = analog(path, "pcm")
    a = infer(ckpt, digits, times=(1.0, 86400.0), repeats=2, seed=5)
    b = infer(ckpt, digits, times=(1.0, 86400.0), repeats=2, seed=5)
    c = infer(ckpt, digits, times=(1.0, 86400.0), repeats=2, seed=6)
    assert a.records == b.records
    assert [r.accuracy for r in a.records] != [r.accuracy for r in c.records]


def test_a_cell_does_not_depend_on_the_other_times(cnn_bn_digits, digits):
    # each (repeat, t) draws from its own seed: what lets a resumed study be exact
    path, _ = cnn_bn_digits
    ckpt = analog(path, "pcm")
    both = infer(ckpt, digits, times=(1.0, 86400.0), repeats=2)
    alone = infer(ckpt, digits, times=(86400.0,), repeats=2)
    assert [r for r in both.records if r.t_inference == 86400.0] == alone.records


def test_wan2022_rejects_other_times(cnn_bn_digits, digits):
    path, _ = cnn_bn_digits
    with pytest.raises(SimulationError, match="defined only at t = 1s, 1d, 2d; asked for 1y"):
        infer(analog(path, "reram-wan2022"), digits, times=(1.0, 31536000.0))
    ok = infer(analog(path, "reram-wan2022"), digits, times=(1.0, 86400.0), repeats=2)
    assert len(ok.records) == 4


def test_mismatched_dataset(cnn_bn_digits, tmp_path):
    from conftest import make_fashion_mnist

    from hwsim.data import load_dataset

    make_fashion_mnist(tmp_path)
    fmnist = load_dataset("fashion-mnist", tmp_path, download=False)
    with pytest.raises(CheckpointError, match="trained on digits .* but the dataset is "
                                              "fashion-mnist"):
        infer(analog(cnn_bn_digits[0], "ideal"), fmnist)


def test_analog_checkpoint_round_trip(cnn_bn_digits, tmp_path):
    path, _ = cnn_bn_digits
    ckpt = analog(path, "pcm", "fold")
    out = tmp_path / "analog.pt"
    save_checkpoint(ckpt, out)
    raw = torch.load(out, weights_only=True)  # plain data only
    assert raw["kind"] == "analog" and raw["bn_mode"] == "fold"
    assert raw["preset"]["noise_model"]["type"] == "pcm"
    back = load_checkpoint(out)
    assert not any("running_mean" in k for k in back.state_dict)  # folded weights
    assert back.preset == ckpt.preset


def test_bn_free_model_records_bn_none(cnn_nobn_digits):
    conv = to_analog(load_checkpoint(cnn_nobn_digits[0]), load_preset("pcm"), "fold")
    assert conv.checkpoint.bn_mode == "none" and "nothing to fold" in conv.note


def test_converting_twice_is_refused(cnn_bn_digits):
    once = analog(cnn_bn_digits[0], "pcm")
    with pytest.raises(CheckpointError, match="already analog"):
        to_analog(once, load_preset("pcm"))


def test_summary_statistics():
    records = [Record(1.0, i, a) for i, a in enumerate([0.8, 0.9, 1.0])]
    (s,) = summarize_records(records, 1.0)
    assert s.mean == pytest.approx(0.9) and s.std == pytest.approx(0.1)
    assert s.ci95 == pytest.approx(4.302653 * 0.1 / 3**0.5, rel=1e-5)  # t(0.975, 2)
    assert s.normalized == pytest.approx(0.9)


def test_results_file_has_every_record(cnn_bn_digits, digits, tmp_path):
    result = infer(analog(cnn_bn_digits[0], "pcm"), digits, times=(1.0, 3600.0), repeats=2)
    data = json.loads(write_results(result, tmp_path / "r.json").read_text())
    assert len(data["records"]) == 4 and data["meta"]["preset"]["name"] == "pcm"
    assert data["meta"]["settings"]["seed"] == 0 and data["meta"]["versions"]["aihwkit"]
    csv_text = write_results(result, tmp_path / "r.csv").read_text().splitlines()
    assert csv_text[1] == "t_inference_s,repeat,accuracy,normalized" and len(csv_text) == 6
