"""Studies: spec (the YAML file) -> plan (models and inference jobs) -> units (what one task
computes) -> executors (this process or Ray) -> driver (the only writer of the run folder),
with the results store (:mod:`~hwsim.study.store`) and the run's status.

The public names are loaded on first use, so that reading a store (the report) does not
import the simulator.
"""

from __future__ import annotations

import importlib

_PUBLIC = {
    "StudyRun": "driver", "run_study": "driver",
    "InferJob": "plan", "ModelJob": "plan", "Plan": "plan", "plan_study": "plan",
    "DatasetPlan": "spec", "Study": "spec", "find_study": "spec", "load_study": "spec",
    "shipped_studies": "spec",
    "StageStatus": "status", "format_status": "status", "status_from_run_dir": "status",
    "study_status": "status",
}
__all__ = sorted(_PUBLIC)


def __getattr__(name: str):
    if name in _PUBLIC:
        return getattr(importlib.import_module(f"hwsim.study.{_PUBLIC[name]}"), name)
    raise AttributeError(f"module 'hwsim.study' has no attribute {name!r}")
