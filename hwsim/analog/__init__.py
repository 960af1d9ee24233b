"""What happens to a model on analog tiles, without aihwkit: the device-preset schema
(:mod:`~hwsim.analog.presets`), BN folding (:mod:`~hwsim.analog.bn`), BN recalibration
(:mod:`~hwsim.analog.recalibrate`) and hwsim's Gaussian weight noise
(:mod:`~hwsim.analog.noise`)."""
