import pytest
import torch

from hwsim.errors import ConfigError
from hwsim.models import count_bn_layers, create_model, list_models

EXPECTED_BN = {"cnn": 3, "resnet20": 19, "resnet32": 31, "resnet44": 43, "resnet56": 55,
               "vgg11": 8, "vgg16": 13}


def test_registry_lists_every_architecture():
    assert list_models() == list(EXPECTED_BN)


@pytest.mark.parametrize("arch", list_models())
@pytest.mark.parametrize("bn", [True, False], ids=["bn", "nobn"])
@pytest.mark.parametrize("shape", [(3, 32, 100), (1, 28, 10), (1, 8, 10)],
                         ids=["32x32x3", "28x28x1", "8x8x1"])
def test_builds_and_runs(arch, bn, shape):
    channels, size, classes = shape
    model = create_model(arch, bn=bn, num_classes=classes, in_channels=channels, input_size=size)
    model.eval()
    out = model(torch.randn(2, channels, size, size))
    assert out.shape == (2, classes)
    assert count_bn_layers(model) == (EXPECTED_BN[arch] if bn else 0)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    # Without BN every conv carries its own bias; with BN the BN supplies it.
    assert all((m.bias is not None) == (not bn) for m in convs)


@pytest.mark.parametrize("arch", ["resnet20", "resnet56"])
def test_nobn_resnet_blocks_start_as_identity(arch):
    model = create_model(arch, bn=False, num_classes=10, in_channels=3).eval()
    block = model.blocks[0]
    x = torch.relu(torch.randn(2, 16, 8, 8))
    assert torch.equal(block(x), x)


def test_unknown_architecture_names_the_choices():
    with pytest.raises(ConfigError, match=r"unknown architecture 'resnet18'; choose one of: cnn, "):
        create_model("resnet18", bn=True, num_classes=10, in_channels=3)


@pytest.mark.parametrize("size,taps", [(1, 1.0), (2, 4.0), (4, 6.25), (8, 7.5625)])
def test_inside_taps_counts_the_taps_that_see_the_map(size, taps):
    from hwsim.models.layers import inside_taps

    assert inside_taps(size) == pytest.approx(taps)


@pytest.mark.parametrize("arch", ["vgg11", "vgg16"])
@pytest.mark.parametrize("shape", [(3, 32), (1, 28), (1, 8)], ids=["32x32x3", "28x28x1", "8x8x1"])
def test_nobn_vgg_keeps_its_signal_at_init(arch, shape):
    """Without BN, the logits at init must not vanish (they did: std 1.5e-4 on 8x8 digits,
    and vgg11 never left chance); with BN the scale is BN's business."""
    channels, size = shape
    torch.manual_seed(0)
    model = create_model(arch, bn=False, num_classes=10, in_channels=channels,
                         input_size=size).eval()
    with torch.no_grad():
        logits = model(torch.randn(64, channels, size, size))
    assert 0.2 < float(logits.std()) < 10
