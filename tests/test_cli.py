import json
import os
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from conftest import make_fashion_mnist

from hwsim.checkpoint import load_checkpoint
from hwsim.cli import cli


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def one_error_line(result, message: str, code: int = 2) -> None:
    """Exit ``code``, and the whole output is one ``Error:`` line that contains ``message``."""
    assert result.exit_code == code, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    assert message in lines[0], result.output


def test_models_lists_bn_counts():
    result = run("models")
    assert result.exit_code == 0
    line = next(s for s in result.output.splitlines() if s.startswith("resnet44"))
    assert line.split()[-1] == "43"


def test_train_writes_a_checkpoint(tmp_path):
    out = tmp_path / "m.pt"
    result = run("train", "--arch", "cnn", "--dataset", "digits", "--epochs", "1",
                 "--batch-size", "32", "--compute-device", "cpu", "--out", out)
    assert result.exit_code == 0, result.output
    assert "test accuracy" in result.output and "Warning" not in result.stderr
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
    # what fold folded is said, and stored with the analog checkpoint and the run's metadata
    assert "BN fold: 3 of 3 BatchNorm layers folded" in result.output
    result = run("infer", "--model", out, "--t-inference", "1s,1d", "--repeats", "2",
                 "--engine", "aihwkit", "--out", tmp_path / "r.json")
    assert result.exit_code == 0, result.output
    assert "digital accuracy" in result.output and "normalized" in result.output
    assert "BN fold: 3 of 3 BatchNorm layers folded" in result.output
    placement = json.loads((tmp_path / "r.json").read_text())["meta"]["placement"]
    assert placement["fold"]["kept"] == [] and len(placement["fold"]["folded"]) == 3
    assert placement["layers"]["digital"] == [] and placement["layers"]["n_analog"] == 4


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


def test_train_takes_the_torch_device_as_compute_device():
    """--device is a device preset everywhere; train says which option it wants."""
    one_error_line(run("train", "--dataset", "digits", "--device", "cpu"),
                   "to choose where to train, use --compute-device cpu")


def test_train_warns_when_the_model_did_not_learn(tmp_path):
    """A model stuck at chance gets a warning line (stderr) that says what to change."""
    result = run("train", "--arch", "cnn", "--dataset", "digits", "--epochs", "1", "--lr", "1e-9",
                 "--out", tmp_path / "m.pt")
    assert result.exit_code == 0, result.output
    warning = [line for line in result.stderr.splitlines() if line.startswith("Warning: ")]
    assert len(warning) == 1, result.stderr
    assert "cnn with BN on digits did not learn" in warning[0]
    assert "below 20% (2x chance, 10%)" in warning[0] and "--epochs" in warning[0]
    assert "Warning" not in result.stdout


def test_convert_refuses_weights_that_do_not_fit_before_writing(cnn_bn_digits, tmp_path):
    path, _ = cnn_bn_digits
    payload = torch.load(path, weights_only=True)
    for name, edit in (("missing", lambda sd: sd.pop("0.weight")),
                       ("extra", lambda sd: sd.__setitem__("head.weight", torch.zeros(1)))):
        payload_copy = {**payload, "state_dict": dict(payload["state_dict"])}
        edit(payload_copy["state_dict"])
        bad = tmp_path / f"{name}.pt"
        torch.save(payload_copy, bad)
        out = tmp_path / f"{name}-analog.pt"
        result = run("convert", "--model", bad, "--device", "pcm", "--out", out)
        key = '"0.weight"' if name == "missing" else '"head.weight"'
        one_error_line(result, f"{bad}: weights do not match architecture cnn")
        assert key in result.output
        assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["extra.pt", "missing.pt"]


@pytest.mark.parametrize("extra,message", [
    (["--out", "results.xlsx"], "--out: results.xlsx: unknown results format '.xlsx'; name a "
                                ".json or .csv file"),
    (["--out", "results"], "unknown results format '(none)'"),
    (["--t-inference", "1d,,1y"], "--t-inference 1d,,1y: entry 2 is empty"),
    (["--t-inference", "1d,1h,86400"], "--t-inference 1d,1h,86400: '86400' is given twice"),
])
def test_infer_refuses_bad_options_before_the_run(cnn_bn_digits, tmp_path, monkeypatch, extra,
                                                  message):
    monkeypatch.chdir(tmp_path)
    result = run("infer", "--model", cnn_bn_digits[0], "--device", "ideal", *extra)
    one_error_line(result, message)
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------- outputs that cannot be written


def _unwritable(kind: str, tmp_path: Path) -> Path:
    """A folder path under which nothing can be written."""
    if kind == "parent is a file":
        (tmp_path / "a-file").write_text("x")
        return tmp_path / "a-file" / "sub"
    if kind == "under /proc":
        return Path("/proc/hwsim-test")
    ro = tmp_path / "read-only"
    ro.mkdir()
    ro.chmod(0o555)
    return ro / "sub"


UNWRITABLE = ["parent is a file", "under /proc",
              pytest.param("read-only folder", marks=pytest.mark.skipif(
                  os.geteuid() == 0, reason="root writes into read-only folders"))]


@pytest.mark.parametrize("kind", UNWRITABLE)
@pytest.mark.parametrize("command", ["train", "convert", "infer", "study run", "report"])
def test_an_output_that_cannot_be_written_is_refused_before_the_work(
        command, kind, cnn_bn_digits, tmp_path):
    """One line, exit 2, before any training or inference, and nothing written anywhere."""
    bad = _unwritable(kind, tmp_path)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    model = cnn_bn_digits[0]
    study = Path(__file__).resolve().parent.parent / "experiments" / "quick.yaml"
    args = {
        "train": ["train", "--dataset", "digits", "--epochs", "50", "--out", bad / "m.pt"],
        "convert": ["convert", "--model", model, "--out", bad / "a.pt"],
        "infer": ["infer", "--model", model, "--device", "pcm", "--repeats", "50",
                  "--out", bad / "r.json"],
        "study run": ["study", "run", study, "--out", bad],
        "report": ["report", model.parent, "--out", bad],
    }[command]
    result = run(*args)
    one_error_line(result, "cannot be written")
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


def test_infer_and_diagnose_share_their_chip_options():
    """--eta, --seed, --dataset, --data-dir and --batch-size mean the same in both commands
    (declared once, in hwsim.cli.options); --repeats and --t-inference differ only in their
    defaults and help."""
    from hwsim.cli import cli

    def params(name):
        return {p.name: p for p in cli.commands[name].params}

    infer, diagnose = params("infer"), params("diagnose")
    for name in ("eta", "seed", "dataset", "data_dir", "batch_size", "repeats", "times",
                 "calib_size"):
        a, b = infer[name], diagnose[name]
        assert a.opts == b.opts and type(a.type) is type(b.type), name
        assert getattr(a.type, "setting", None) == getattr(b.type, "setting", None), name
    for name in ("eta", "seed", "dataset", "data_dir", "batch_size"):
        assert infer[name].help == diagnose[name].help
        assert infer[name].default == diagnose[name].default
    assert (infer["repeats"].default, diagnose["repeats"].default) == (10, 5)
