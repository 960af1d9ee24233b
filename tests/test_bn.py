import pytest
import torch

from hwsim.analog.bn import fold_bn
from hwsim.data import normalize
from hwsim.models import count_bn_layers, create_model, list_models


def _randomize_bn(model, gen):
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.5)
            m.running_var.copy_(torch.rand(m.num_features, generator=gen) * 2 + 0.1)
            m.weight.data.copy_(torch.randn(m.num_features, generator=gen))
            m.bias.data.copy_(torch.randn(m.num_features, generator=gen) * 0.3)


@pytest.mark.parametrize("arch", list_models())
def test_folding_preserves_the_function(arch, digits):
    gen = torch.Generator().manual_seed(0)
    model = create_model(arch, bn=True, num_classes=10, in_channels=1, input_size=8).eval()
    _randomize_bn(model, gen)
    folded = fold_bn(model)
    assert count_bn_layers(folded) == 0 and count_bn_layers(model) > 0
    x = normalize(digits.test_x[:64], digits.mean, digits.std)  # real inputs
    with torch.no_grad():
        ref, out = model(x), folded(x)
    assert torch.allclose(out, ref, rtol=1e-4, atol=1e-5 * ref.abs().max())


def test_folding_a_trained_model_keeps_predictions(cnn_bn_digits, digits):
    from hwsim.checkpoint import load_checkpoint

    model = load_checkpoint(cnn_bn_digits[0]).build_model()
    folded = fold_bn(model)
    x = normalize(digits.test_x, digits.mean, digits.std)
    with torch.no_grad():
        ref, out = model(x), folded(x)
    assert (out - ref).abs().max() <= 1e-5 * max(1.0, ref.abs().max())
    assert torch.equal(out.argmax(1), ref.argmax(1))
