"""The exception hierarchy. The CLI turns every HwsimError into one line and a non-zero exit."""


class HwsimError(Exception):
    """Base class of every error hwsim reports to a user (bad input, missing data...)."""

    exit_code = 2


class ConfigError(HwsimError):
    """A bad option, preset or study file: the message names the file, the key and the choices."""


class CheckpointError(HwsimError):
    """A checkpoint that is missing, truncated, unsafe or of an unknown format."""


class DatasetError(HwsimError):
    """A dataset that is absent and cannot be fetched; the message says how to get it."""


class SimulationError(HwsimError):
    """A simulation that cannot run as asked (e.g. a noise model undefined at that time)."""
