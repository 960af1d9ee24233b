"""hwsim: how much accuracy a trained network loses on analog in-memory hardware.

The library is importable without the CLI: see ``hwsim.models``, ``hwsim.data``,
``hwsim.train``, ``hwsim.checkpoint``, ``hwsim.devices``, ``hwsim.convert``, ``hwsim.infer``,
``hwsim.study`` and ``hwsim.report``.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("hwsim")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"
