"""Model registry: ``create_model(name, bn=..., num_classes=..., in_channels=...)``."""

from hwsim.models import cnn, resnet, vgg  # noqa: F401  (registers the builders, in this order)
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
    "list_models",
    "register_model",
]
