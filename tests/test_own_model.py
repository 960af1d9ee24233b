"""Architectures and checkpoints from elsewhere: torchvision:NAME, a user's factory (in a
file, or a module), foreign checkpoint layouts, and the one-line refusals."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

from hwsim.checkpoint import load_checkpoint, save_checkpoint
from hwsim.errors import CheckpointError, ConfigError
from hwsim.models import check_arch, count_bn_layers, create_model

USER_NET = textwrap.dedent('''
    """A user's CNN: its last BN follows an addition."""
    from torch import nn


    class AddNet(nn.Module):
        def __init__(self, num_classes, in_channels, bn):
            super().__init__()
            norm = nn.BatchNorm2d if bn else (lambda c: nn.Identity())
            self.stem = nn.Sequential(nn.Conv2d(in_channels, 8, 3, padding=1), norm(8), nn.ReLU())
            self.branch = nn.Conv2d(8, 8, 3, padding=1)
            self.post = norm(8)
            self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                      nn.Linear(8, num_classes))

        def forward(self, x):
            h = self.stem(x)
            return self.head(self.post(h + self.branch(h)).relu())


    def build(num_classes, in_channels, bn=True):
        return AddNet(num_classes, in_channels, bn)


    def anything(**kw):
        return AddNet(kw["num_classes"], kw["in_channels"], kw["bn"])


    def explode(num_classes):
        raise RuntimeError("no GPU here")


    def not_a_model(bn):
        return [1, 2]


    def always_bn(num_classes, in_channels):
        return AddNet(num_classes, in_channels, True)


    NOT_CALLABLE = 3
''')


@pytest.fixture(scope="session")
def user_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("user")
    (folder / "usernet.py").write_text(USER_NET)
    return folder


@pytest.fixture
def user_file(user_folder, monkeypatch):
    """A user's model file, named relative to the current folder (as a user types it)."""
    monkeypatch.chdir(user_folder)
    return "usernet.py"


SHAPE = dict(num_classes=10, in_channels=1, input_size=8)


@pytest.mark.parametrize("name,bn,bn_layers", [
    ("torchvision:resnet18", True, 20), ("torchvision:resnet18", False, 0),
    ("torchvision:mobilenet_v2", True, 52), ("torchvision:squeezenet1_1", False, 0),
])
def test_torchvision_builds_for_the_dataset(name, bn, bn_layers, one_thread):
    torch.manual_seed(0)
    model = create_model(name, bn=bn, **SHAPE).eval()
    assert count_bn_layers(model) == bn_layers
    first = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    assert first.in_channels == 1 and first.stride == (1, 1)  # small-input stem
    assert not any(isinstance(m, nn.MaxPool2d) for m in model.modules()
                   if m is getattr(model, "maxpool", None))
    if not bn:  # BN-free convs carry a bias, as hwsim's own BN-free models
        assert all(m.bias is not None for m in model.modules() if isinstance(m, nn.Conv2d))
    with torch.no_grad():
        out = model(torch.randn(2, 1, 8, 8))
    assert out.shape == (2, 10) and torch.isfinite(out).all()


def test_large_inputs_keep_the_torchvision_stem():
    model = create_model("torchvision:resnet18", bn=True, num_classes=5, in_channels=3,
                         input_size=64)
    assert model.conv1.kernel_size == (7, 7) and model.conv1.stride == (2, 2)
    assert isinstance(model.maxpool, nn.MaxPool2d)


def test_user_factory_from_a_file_and_a_module(user_file, monkeypatch):
    a = create_model(f"{user_file}:build", bn=True, **SHAPE)
    b = create_model(f"{user_file}:anything", bn=False, **SHAPE)  # takes **kwargs
    assert count_bn_layers(a) == 2 and count_bn_layers(b) == 0
    monkeypatch.syspath_prepend(str(Path.cwd()))  # the folder holding usernet.py
    c = create_model("usernet:build", bn=True, **SHAPE)
    assert type(c).__name__ == "AddNet"


@pytest.mark.parametrize("name,bn,message", [
    ("torchvision:resnet19", True, "unknown torchvision classification model 'resnet19'"),
    ("torchvision:vgg11_bn", False, "torchvision:vgg11_bn cannot be built without BN"),
    ("torchvision:vgg11", True, "torchvision:vgg11 has no BatchNorm layers"),
    ("USER:explode", True, "USER:explode raised RuntimeError: no GPU here"),
    ("USER:not_a_model", True, "USER:not_a_model returned list, not a torch nn.Module"),
    ("USER:always_bn", False, "returned a model with BatchNorm layers, but it was asked for "
                              "one without (it takes no bn argument)"),
    ("USER:missing", True, "has no function 'missing'"),
    ("USER:NOT_CALLABLE", True, "'NOT_CALLABLE' in usernet.py is not callable"),
    ("nothere.py:build", True, "nothere.py:build: no such file nothere.py"),
    ("no_such_package.models:build", True, "no module named 'no_such_package'"),
    ("resnet18", True, "unknown architecture 'resnet18'; choose one of: cnn,"),
])
def test_bad_architectures_are_one_line(user_file, name, bn, message):
    name, message = name.replace("USER", user_file), message.replace("USER", user_file)
    with pytest.raises(ConfigError) as err:
        create_model(name, bn=bn, **SHAPE)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_check_arch_does_not_build_a_factory(user_file):
    assert check_arch(f"{user_file}:explode") == f"{user_file}:explode"  # imported, not called


# ------------------------------------------------------------------ foreign checkpoints


@pytest.fixture
def user_ckpt(user_file):
    """An hwsim checkpoint of the user's model (random weights: the layouts are the point)."""
    from hwsim.checkpoint import from_model

    arch = f"{user_file}:build"
    torch.manual_seed(0)
    return from_model(create_model(arch, bn=True, **SHAPE), arch=arch, bn=True,
                      dataset="digits")


@pytest.mark.parametrize("layout", ["plain", "lightning", "timm", "torchvision-ref",
                                    "dataparallel", "lightning+dataparallel"])
def test_foreign_checkpoint_layouts_load(user_ckpt, tmp_path, layout):
    import argparse

    state = user_ckpt.state_dict
    wrapped = {
        "plain": state,
        "lightning": {"epoch": 2, "global_step": 44, "hyper_parameters": {"lr": 0.05},
                      "state_dict": {f"model.{k}": v for k, v in state.items()}},
        "timm": {"epoch": 2, "arch": "addnet", "state_dict": state, "version": 2},
        "torchvision-ref": {"model": state, "epoch": 2, "args": argparse.Namespace(lr=0.05)},
        "dataparallel": {f"module.{k}": v for k, v in state.items()},
        "lightning+dataparallel": {"state_dict": {f"model.module.{k}": v
                                                  for k, v in state.items()}},
    }[layout]
    path = tmp_path / "foreign.pt"
    torch.save(wrapped, path)
    ckpt = load_checkpoint(path, arch=user_ckpt.arch, dataset="digits")
    assert ckpt.test_accuracy is None and ckpt.foreign and ckpt.bn
    assert set(ckpt.state_dict) == set(state)
    assert all(torch.equal(ckpt.state_dict[k], v) for k, v in state.items())


@pytest.mark.parametrize("edit,message", [
    (lambda s: s.pop("head.2.bias"), 'missing key "head.2.bias"'),
    (lambda s: s.__setitem__("extra.weight", torch.zeros(1)), 'unexpected key "extra.weight"'),
])
def test_foreign_checkpoint_that_does_not_fit(user_ckpt, tmp_path, edit, message):
    state = dict(user_ckpt.state_dict)
    edit(state)
    path = tmp_path / "bad.pt"
    torch.save({"state_dict": state}, path)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path, arch=user_ckpt.arch, dataset="digits")
    assert message in str(err.value) and "\n" not in str(err.value)


def test_ambiguous_foreign_checkpoint(user_ckpt, tmp_path):
    path = tmp_path / "two.pt"
    torch.save({"state_dict": user_ckpt.state_dict, "model": user_ckpt.state_dict}, path)
    with pytest.raises(CheckpointError, match="ambiguous: it holds weights under both "
                                              "'state_dict' and 'model'"):
        load_checkpoint(path, arch=user_ckpt.arch, dataset="digits")


def test_arch_or_dataset_contradicting_an_hwsim_checkpoint(cnn_bn_digits):
    path = cnn_bn_digits[0]
    with pytest.raises(CheckpointError, match="an hwsim checkpoint of cnn, but --arch names "
                                              "torchvision:resnet18"):
        load_checkpoint(path, arch="torchvision:resnet18")
    with pytest.raises(CheckpointError, match="trained on digits .* but the dataset is "
                                              "fashion-mnist"):
        load_checkpoint(path, dataset="fashion-mnist")
    assert load_checkpoint(path, arch="cnn", dataset="digits").arch == "cnn"


def test_torchvision_checkpoint_round_trip(tmp_path, digits, one_thread):
    """A torchvision model's own state_dict (as torchvision saves it) converts and infers;
    the checkpoint records the name, and rebuilds the same function."""
    from hwsim.analog.presets import load_preset
    from hwsim.inference.evaluate import measure_test_accuracy
    from hwsim.inference.montecarlo import InferSettings, run_inference

    torch.manual_seed(0)
    model = create_model("torchvision:resnet18", bn=True, num_classes=10, in_channels=1,
                         input_size=8)
    path = tmp_path / "resnet18.pth"
    torch.save(model.state_dict(), path)
    ckpt = measure_test_accuracy(load_checkpoint(path, arch="torchvision:resnet18",
                                                 dataset="digits"), digits)
    assert 0 <= ckpt.test_accuracy <= 1
    save_checkpoint(ckpt, tmp_path / "hwsim.pt")
    back = load_checkpoint(tmp_path / "hwsim.pt")
    assert back.arch == "torchvision:resnet18" and back.test_accuracy == ckpt.test_accuracy
    x = torch.randn(3, 1, 8, 8)
    with torch.no_grad():
        assert torch.allclose(back.build_model()(x), model.eval()(x), atol=1e-5)
    result = run_inference(back, digits, InferSettings(times=(1.0,), repeats=1, test_subset=20),
                           preset=load_preset("pcm"), bn_mode="keep", progress=False)
    assert len(result.records) == 1 and 0 <= result.records[0].accuracy <= 1


def test_a_study_imports_a_checkpoint_per_architecture(user_ckpt, user_file, tmp_path):
    """datasets[].checkpoints: the model is loaded (Lightning layout), evaluated, simulated;
    never trained, one model whatever the seeds; bad entries are one line naming the key."""
    import hwsim
    from hwsim.study import load_study, plan_study, run_study

    torch.save({"state_dict": {f"model.{k}": v for k, v in user_ckpt.state_dict.items()}},
               tmp_path / "lightning.ckpt")
    arch = user_ckpt.arch

    def study(entries: str, bn: str = "[bn, no-bn]") -> Path:
        path = tmp_path / "s.yaml"
        path.write_text(f"name: imported\ndatasets:\n  - name: digits\n    test_subset: 40\n"
                        f"    checkpoints: {entries}\narchitectures: ['{arch}']\nbn: {bn}\n"
                        "bn_modes: [keep]\npresets: [ideal]\nrepeats: 1\nseeds: [0, 1]\n")
        return path

    spec = load_study(study(f"[{{arch: '{arch}', path: lightning.ckpt}}]"))
    plan = plan_study(spec)
    assert [(j.key.bn, j.key.seed) for j in plan.models] == [("bn", 0)]
    run_study(spec, tmp_path / "run", progress=False, log=lambda m: None)
    table = hwsim.results(tmp_path / "run")
    assert len(table) == 1 and table["digital_accuracy"][0] is not None
    for entries, message in [
        ("[{arch: cnn, path: lightning.ckpt}]", "checkpoints[0].arch: 'cnn' is not one of"),
        (f"[{{arch: '{arch}', path: nope.pt}}]", "checkpoints[0].path: "),
    ]:
        with pytest.raises(ConfigError, match=re.escape(message)):
            load_study(study(entries))
    with pytest.raises(ConfigError, match="a model with BN, but bn lists only no-bn"):
        load_study(study(f"[{{arch: '{arch}', path: lightning.ckpt}}]", bn="[no-bn]"))
