"""hwsim: how much accuracy a trained network loses on analog in-memory hardware.

The library is importable without the CLI, one folder per stage of the pipeline:
``hwsim.data`` and ``hwsim.models`` (what is trained), ``hwsim.training``,
``hwsim.checkpoint``, ``hwsim.analog`` (presets, BN fold/recalibration, weight noise),
``hwsim.engine`` (the only aihwkit user), ``hwsim.inference`` (chips, Monte-Carlo runs),
``hwsim.study`` and ``hwsim.report``.

In a notebook: ``hwsim.simulate(model, data, preset="pcm", times=[...])`` runs the Monte-Carlo
inference of an ``nn.Module`` with BN kept, folded and recalibrated, and
``hwsim.results(run_dir)`` loads a study's results (:mod:`hwsim.notebook`); both are imported
on first use, so ``import hwsim`` stays light.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("hwsim")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"


def __getattr__(name: str):
    if name in ("simulate", "results", "as_dataset"):
        import importlib  # by name: hwsim.notebook imports modules that import hwsim

        return getattr(importlib.import_module("hwsim.notebook"), name)
    raise AttributeError(f"module 'hwsim' has no attribute {name!r}")
