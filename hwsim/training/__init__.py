"""Digital and hardware-aware training: the recipe (:mod:`~hwsim.training.config`), the loop
(:mod:`~hwsim.training.loop`) and HWA (:mod:`~hwsim.training.hwa`)."""

from hwsim.training.config import TRAIN_DEFAULTS, TrainConfig
from hwsim.training.loop import TrainingError, TrainResult, not_learned_warning, train

__all__ = ["TRAIN_DEFAULTS", "TrainConfig", "TrainResult", "TrainingError",
           "not_learned_warning", "train"]
