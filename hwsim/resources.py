"""Files shipped inside the package: the device presets and the studies.

They live in the repository's top-level ``device_configs/`` and ``experiments/`` (one copy,
the one people read and edit); the package's ``hwsim/device_configs`` and ``hwsim/experiments``
are symbolic links to them, so an editable install reads them in place, and a wheel or sdist
(``[tool.setuptools.package-data]``) carries them as plain files inside ``hwsim/``.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path


def shipped_dir(folder: str) -> Path:
    """The folder ``folder`` of hwsim's package data (``device_configs`` or ``experiments``)."""
    # hwsim is always installed as plain files (never zipped), so this is a real path
    return Path(str(files("hwsim").joinpath(folder)))
