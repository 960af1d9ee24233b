"""Analog inference: analog checkpoints and chips (:mod:`~hwsim.inference.analog`), the
Monte-Carlo loop (:mod:`~hwsim.inference.montecarlo`), evaluation
(:mod:`~hwsim.inference.evaluate`) and results (:mod:`~hwsim.inference.results`)."""
