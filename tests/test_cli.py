import pytest
from click.testing import CliRunner
from conftest import make_fashion_mnist

from hwsim.checkpoint import load_checkpoint
from hwsim.cli import cli


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_models_lists_bn_counts():
    result = run("models")
    assert result.exit_code == 0
    line = next(s for s in result.output.splitlines() if s.startswith("resnet44"))
    assert line.split()[-1] == "43"


def test_train_writes_a_checkpoint(tmp_path):
    out = tmp_path / "m.pt"
    result = run("train", "--arch", "cnn", "--dataset", "digits", "--epochs", "1",
                 "--batch-size", "32", "--out", out)
    assert result.exit_code == 0, result.output
    assert "test accuracy" in result.output
    ckpt = load_checkpoint(out)
    assert ckpt.arch == "cnn" and ckpt.dataset == "digits" and 0.5 < ckpt.test_accuracy <= 1


def test_train_on_fashion_mnist_files(tmp_path):
    make_fashion_mnist(tmp_path / "data")
    result = run("train", "--arch", "cnn", "--no-bn", "--dataset", "fashion-mnist", "--data-dir",
                 tmp_path / "data", "--epochs", "1", "--out", tmp_path / "f.pt")
    assert result.exit_code == 0, result.output
    assert load_checkpoint(tmp_path / "f.pt").bn is False


@pytest.mark.parametrize("args,message", [
    (["train", "--arch", "resnet18"], "unknown architecture 'resnet18'; choose one of: cnn,"),
    (["train", "--dataset", "svhn"], "unknown dataset 'svhn'; choose one of: fashion-mnist,"),
    (["train", "--epochs", "0"], "Invalid value for '--epochs'"),
    (["train", "--dataset", "fashion-mnist", "--data-dir", "/nonexistent"], "is not a folder"),
])
def test_bad_input_is_one_line_and_exit_2(args, message):
    result = run(*args)
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and message in lines[0]


def test_devices_lists_each_presets_mapping():
    result = run("devices")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    for name, mapping in [("pcm", "per-tile, omega 1"), ("pcm-column", "per-column, omega 1")]:
        i = next(i for i, line in enumerate(lines) if line.split()[0] == name)
        assert lines[i + 1].split() == ["mapping:", *f"{mapping}; tiles of at most 512 inputs x "
                                        "512 outputs".split()]


def test_infer_refuses_a_preset_neither_engine_simulates(cnn_bn_digits, tmp_path):
    preset = tmp_path / "biased.yaml"
    preset.write_text("name: biased\ndescription: d\nsource: s\nmapping: {digital_bias: false}\n")
    result = run("infer", "--model", cnn_bn_digits[0], "--device", preset)
    assert result.exit_code == 2
    assert result.output.strip() == (
        f"Error: {preset}: mapping.digital_bias: false (a bias on the analog tile) is not "
        "supported: aihwkit's torch tile, on which the fast and aihwkit engines run, keeps "
        "biases digital; set digital_bias: true (or leave it out)")


def test_convert_then_infer(cnn_bn_digits, tmp_path):
    path, _ = cnn_bn_digits
    out = tmp_path / "a.pt"
    result = run("convert", "--model", path, "--device", "pcm", "--bn", "fold", "--out", out)
    assert result.exit_code == 0, result.output
    result = run("infer", "--model", out, "--t-inference", "1s,1d", "--repeats", "2",
                 "--engine", "aihwkit", "--out", tmp_path / "r.json")
    assert result.exit_code == 0, result.output
    assert "digital accuracy" in result.output and "normalized" in result.output
    assert (tmp_path / "r.json").exists()


def test_infer_converts_a_digital_checkpoint_on_the_fly(cnn_nobn_digits):
    result = run("infer", "--model", cnn_nobn_digits[0], "--device", "gaussian", "--eta", "0.2",
                 "--repeats", "2", "--engine", "aihwkit")
    assert result.exit_code == 0, result.output
    assert "preset gaussian" in result.output


@pytest.mark.parametrize("extra,message", [
    (["--t-inference", "0"], "bad inference time '0'"),
    (["--t-inference", "tomorrow"], "bad inference time 'tomorrow'"),
    (["--device", "flash"], "unknown device preset 'flash'"),
    (["--device", "pcm", "--eta", "0.1"], "'pcm' has no weight_noise"),
    ([], "is a digital checkpoint: name a device preset with --device"),
    (["--device", "pcm", "--dataset", "cifar10"], "trained on digits (10 classes, 1x8x8) but "
                                                  "the dataset is cifar10"),
])
def test_infer_bad_input(cnn_bn_digits, extra, message):
    result = run("infer", "--model", cnn_bn_digits[0], *extra)
    assert result.exit_code == 2, result.output
    assert len(result.output.strip().splitlines()) == 1 and message in result.output


def test_infer_wrong_dataset_for_checkpoint(cnn_bn_digits, tmp_path):
    make_fashion_mnist(tmp_path / "fm")
    result = run("infer", "--model", cnn_bn_digits[0], "--device", "ideal", "--dataset",
                 "fashion-mnist", "--data-dir", tmp_path / "fm")
    assert result.exit_code == 2
    assert "trained on digits" in result.output
