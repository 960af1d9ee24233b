"""Model registry: ``create_model(name, bn=..., num_classes=..., in_channels=...)`` for
hwsim's own architectures, ``torchvision:NAME`` and a user's ``module:function``."""

from hwsim.models import cnn, resnet, vgg  # noqa: F401  (registers the builders, in this order)
from hwsim.models.external import SMALL_INPUT, is_external, torchvision_names
from hwsim.models.registry import (
    check_arch,
    count_bn_layers,
    count_parameters,
    create_model,
    list_models,
    register_model,
)

__all__ = [
    "check_arch",
    "count_bn_layers",
    "count_parameters",
    "create_model",
    "is_external",
    "list_models",
    "register_model",
    "SMALL_INPUT",
    "torchvision_names",
]
