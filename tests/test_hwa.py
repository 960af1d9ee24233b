"""Hardware-aware training: weight noise on training forwards, clipping, fine-tuning."""

import dataclasses

import pytest
import torch
from click.testing import CliRunner
from torch import nn

from hwsim.checkpoint import from_model, load_checkpoint, save_checkpoint
from hwsim.cli import cli
from hwsim.data import normalize
from hwsim.errors import CheckpointError, ConfigError
from hwsim.inference.evaluate import evaluate
from hwsim.models import create_model
from hwsim.training.config import TrainConfig
from hwsim.training.hwa import analog_weights, clip_weights, noisy_forward
from hwsim.training.loop import train

PLAIN = TrainConfig("cnn", True, "digits", epochs=1, batch_size=64, seed=1, train_subset=320)


def cnn():
    torch.manual_seed(0)
    return create_model("cnn", bn=True, num_classes=10, in_channels=1, input_size=8)


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def one_line_error(result, message):
    assert result.exit_code != 0
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and message in lines[0], lines


# ------------------------------------------------------------------ the weight noise


def test_noise_statistics_are_what_the_flag_says(digits):
    """Captured in forward pre-hooks: each layer's weight during a noisy forward is the clean
    weight plus zero-mean noise of std eta * max|W| (tolerance: 5 standard errors)."""
    model, eta = cnn().train(), 0.1
    clean = {k: w.detach().clone() for k, w in analog_weights(model).items()}
    seen = {}
    layers = {n: m for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    for name, m in layers.items():
        m.register_forward_pre_hook(
            lambda mod, _, name=name: seen.setdefault(name, []).append(mod.weight.detach().clone()))
    forward = noisy_forward(model, eta, torch.Generator().manual_seed(0))
    x = normalize(digits.train_x[:16], digits.mean, digits.std)
    forward(x)
    forward(x)
    assert set(seen) == set(layers) and len(layers) == 4
    for name in layers:
        w = clean[f"{name}.weight"]
        noise = seen[name][0] - w
        n, want = noise.numel(), eta * float(w.abs().max())
        assert abs(float(noise.mean())) < 5 * want / n ** 0.5, name
        assert float(noise.std()) == pytest.approx(want, rel=5 / (2 * n) ** 0.5), name
        assert not torch.equal(seen[name][0], seen[name][1])  # fresh noise on every forward
    # the model's own parameters never change: evaluation sees clean weights
    assert all(torch.equal(w, clean[k]) for k, w in analog_weights(model).items())


def test_gradient_reaches_the_clean_weights_as_computed_at_the_noisy_ones(digits):
    model = cnn().train()
    gen = torch.Generator().manual_seed(3)
    x = normalize(digits.train_x[:16], digits.mean, digits.std)
    y = digits.train_y[:16]
    nn.functional.cross_entropy(noisy_forward(model, 0.1, gen)(x), y).backward()
    # the same noise on a copy whose weights *are* the noisy weights
    twin = cnn().train()
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for w in analog_weights(twin).values():
            w.add_(torch.randn(w.shape, generator=gen) * 0.1 * w.abs().max())
    nn.functional.cross_entropy(twin(x), y).backward()
    for (name, p), q in zip(model.named_parameters(), twin.parameters()):
        assert p.grad is not None and torch.allclose(p.grad, q.grad, rtol=1e-4, atol=1e-7), name


def test_eta_zero_is_the_plain_forward():
    model = cnn()
    assert noisy_forward(model, 0.0, torch.Generator()) is model


def test_clipping_is_layer_gaussian():
    model = cnn()
    w = analog_weights(model)["4.weight"]
    with torch.no_grad():
        w.view(-1)[:5] = torch.tensor([9.0, -9.0, 5.0, -4.0, 3.0])  # outliers
    before = {k: v.detach().clone() for k, v in analog_weights(model).items()}
    clip_weights(model, 2.0)
    for k, v in analog_weights(model).items():
        v = v.detach()
        bound = 2.0 * float(before[k].std())
        assert float(v.abs().max()) <= bound * (1 + 1e-6)
        inside = before[k].abs() <= bound
        assert torch.equal(v[inside], before[k][inside])  # only the tails move
    assert float(w.detach().abs().max()) == pytest.approx(2.0 * float(before["4.weight"].std()))
    clip_weights(model, None)  # off: a no-op


# ------------------------------------------------------------------ training


def test_hwa_noise_zero_is_byte_identical_to_plain_training(digits, tmp_path):
    paths = [tmp_path / "plain.pt", tmp_path / "hwa0.pt"]
    for path, cfg in zip(paths, (PLAIN, dataclasses.replace(PLAIN, hwa_noise=0.0))):
        save_checkpoint(train(cfg, digits, progress=False).checkpoint, path)
    assert paths[0].read_bytes() == paths[1].read_bytes()


def test_defaults_leave_the_settings_dict_and_its_hashes_unchanged():
    """Studies hash ``to_dict()``; checkpoints store it: the new keys appear only when used."""
    old_keys = {"arch", "bn", "dataset", "epochs", "batch_size", "lr", "momentum",
                "weight_decay", "warmup_frac", "grad_clip", "seed", "train_subset"}
    assert set(PLAIN.to_dict()) == old_keys
    d = dataclasses.replace(PLAIN, hwa_noise=0.06, hwa_clip=2.0, init="a.pt").to_dict()
    assert d["hwa_noise"] == 0.06 and d["hwa_clip"] == 2.0 and d["init"] == "a.pt"


def test_hwa_training_records_its_settings_and_evaluates_noise_free(digits):
    cfg = dataclasses.replace(PLAIN, hwa_noise=0.06, hwa_clip=2.5)
    result = train(cfg, digits, progress=False)
    tc = result.checkpoint.train_config
    assert tc["hwa_noise"] == 0.06 and tc["hwa_clip"] == 2.5
    a = evaluate(result.model, digits.test_x, digits.test_y, digits.normalization)
    b = evaluate(result.model, digits.test_x, digits.test_y, digits.normalization)
    assert a == b == result.test_accuracy
    plain = train(PLAIN, digits, progress=False).checkpoint.state_dict
    assert not torch.equal(plain["0.weight"], result.checkpoint.state_dict["0.weight"])
    for k, w in analog_weights(result.model).items():  # clipped after the last step
        w = w.detach()
        assert float(w.abs().max()) <= 2.5 * float(w.std()) * 1.05, k


def test_init_fine_tunes_from_the_checkpoint(digits, cnn_bn_digits):
    path, _ = cnn_bn_digits
    start = load_checkpoint(path).state_dict
    # a learning rate so small that the weights cannot move: training starts from the file
    cfg = dataclasses.replace(PLAIN, lr=1e-12, init=str(path), hwa_noise=0.06)
    result = train(cfg, digits, progress=False)
    end = result.checkpoint.state_dict
    assert torch.allclose(end["0.weight"], start["0.weight"], atol=1e-8)
    assert result.checkpoint.train_config["init"] == str(path)
    assert len(result.checkpoint.train_config["init_sha256"]) == 64


def test_init_of_another_model_is_refused(digits, cnn_nobn_digits, tmp_path):
    with pytest.raises(CheckpointError, match="is cnn without BN on digits, but this run trains "
                                              "cnn with BN on digits"):
        train(dataclasses.replace(PLAIN, init=str(cnn_nobn_digits[0])), digits, progress=False)
    with pytest.raises(ConfigError, match=r"hwa_noise: must be a finite number in \[0, 10\]"):
        train(dataclasses.replace(PLAIN, hwa_noise=-0.1), digits, progress=False)
    with pytest.raises(ConfigError, match=r"hwa_clip: must be a finite number in \(0, 1000\]"):
        train(dataclasses.replace(PLAIN, hwa_clip=0.0), digits, progress=False)


# ------------------------------------------------------------------ command line


def test_cli_hwa_noise_zero_writes_the_plain_checkpoint(tmp_path):
    common = ["train", "--dataset", "digits", "--epochs", "1", "--batch-size", "64",
              "--train-subset", "320"]
    assert run(*common, "--out", tmp_path / "a.pt").exit_code == 0
    result = run(*common, "--hwa-noise", "0", "--out", tmp_path / "b.pt")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "a.pt").read_bytes() == (tmp_path / "b.pt").read_bytes()


def test_cli_hwa_training(tmp_path):
    result = run("train", "--dataset", "digits", "--epochs", "1", "--train-subset", "320",
                 "--hwa-noise", "0.06", "--hwa-clip", "2", "--out", tmp_path / "h.pt")
    assert result.exit_code == 0, result.output
    assert "hardware-aware (noise 0.06 x max|W|)" in result.output
    assert load_checkpoint(tmp_path / "h.pt").train_config["hwa_clip"] == 2.0


@pytest.fixture
def resnet_checkpoint(tmp_path):
    model = create_model("resnet20", bn=True, num_classes=10, in_channels=1, input_size=8)
    return save_checkpoint(from_model(model, arch="resnet20", bn=True, dataset="digits"),
                           tmp_path / "resnet20.pt")


@pytest.mark.parametrize("args,message", [
    (["--hwa-noise", "-0.1"], "Invalid value for '--hwa-noise'"),
    (["--hwa-clip", "0"], "Invalid value for '--hwa-clip'"),
    (["--init", "RESNET"], "is resnet20 with BN on digits, but this run trains cnn with BN"),
    (["--init", "NOBN"], "is cnn without BN on digits, but this run trains cnn with BN"),
    (["--init", "missing.pt"], "missing.pt: no such file"),
])
def test_cli_bad_input_is_one_line_and_writes_nothing(args, message, tmp_path,
                                                      resnet_checkpoint, cnn_nobn_digits):
    args = [{"RESNET": resnet_checkpoint, "NOBN": cnn_nobn_digits[0]}.get(a, a) for a in args]
    out = tmp_path / "out.pt"
    one_line_error(run("train", "--dataset", "digits", "--epochs", "1", *args, "--out", out),
                   message)
    assert not out.exists()
