"""Done/total per stage of a study run, from its run folder."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from hwsim.errors import HwsimError
from hwsim.study.plan import Plan, plan_study
from hwsim.study.spec import Study, load_study
from hwsim.study.store import STORE_NAME, Store


@dataclass
class StageStatus:
    name: str
    done: int
    total: int


def study_status(plan: Plan, run_dir: str | Path) -> list[StageStatus]:
    """Done/total per stage: training, then inference per preset."""
    run_dir = Path(run_dir)
    store_path = run_dir / STORE_NAME
    done_ids: set[str] = set()
    if store_path.is_file():
        with Store(store_path) as store:
            done_ids = store.done_ids()
    trained = sum((run_dir / "checkpoints" / m.checkpoint_name).is_file() for m in plan.models)
    stages = [StageStatus("train", trained, len(plan.models))]
    for name in plan.study.presets:
        cells = [c for j in plan.infers if j.preset_name == name for c in j.cells()]
        stages.append(StageStatus(f"infer {name}", sum(c.id in done_ids for c in cells),
                                  len(cells)))
    return stages


def status_from_run_dir(run_dir: str | Path) -> tuple[Study, list[StageStatus]]:
    """Status of the study last run into ``run_dir`` (the study file it recorded)."""
    with Store.open_existing(run_dir) as store:
        meta = store.meta()
    if "study_path" not in meta:
        raise HwsimError(f"{run_dir}: the store records no study")
    study = load_study(meta["study_path"])
    return study, study_status(plan_study(study, meta.get("engine")), run_dir)



def format_status(stages: list[StageStatus]) -> str:
    width = max(len(s.name) for s in stages)
    return "\n".join(f"{s.name:<{width}}  {s.done:>6}/{s.total:<6} "
                     f"{'done' if s.done == s.total else f'{100 * s.done / max(s.total, 1):.0f}%'}"
                     for s in stages)


