"""hwsim: how much accuracy a trained network loses on analog in-memory hardware.

The library is importable without the CLI, one folder per stage of the pipeline:
``hwsim.data`` and ``hwsim.models`` (what is trained), ``hwsim.training``,
``hwsim.checkpoint``, ``hwsim.analog`` (presets, BN fold/recalibration, weight noise),
``hwsim.engine`` (the only aihwkit user), ``hwsim.inference`` (chips, Monte-Carlo runs),
``hwsim.study`` and ``hwsim.report``.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("hwsim")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"
