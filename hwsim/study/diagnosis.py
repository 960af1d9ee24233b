"""A study's diagnoses (its ``diagnose`` switch): run after the inference stage, in this
process, each written to ``RUN_DIR/diagnose/ID.json`` (atomically) as soon as it is done, so
an interrupted run loses no finished diagnosis and a rerun computes only the missing ones.
The store's meta ``diagnose`` lists the current plan's diagnoses (the report reads those,
:func:`hwsim.report.diagnosis.load_diagnoses`)."""

from __future__ import annotations

import json
from pathlib import Path

from hwsim.checkpoint import checkpoint_from_bytes
from hwsim.data import load_dataset
from hwsim.study.plan import DiagnoseJob, Plan
from hwsim.study.store import DIAGNOSE_DIR, Store
from hwsim.util.runtime import atomic_write


def diagnosis_path(run_dir: Path, job: DiagnoseJob) -> Path:
    return Path(run_dir) / DIAGNOSE_DIR / f"{job.id}.json"


def run_diagnoses(plan: Plan, run_dir: Path, store: Store, *, engine: str, data_dir: str | None,
                  compute_device: str, log=print, progress: bool = True) -> int:
    """Compute the plan's missing diagnoses; returns how many were computed."""
    from hwsim.diagnose.run import DiagnoseSettings, diagnose  # the engines: only to compute

    if not plan.diagnoses:
        return 0
    store.set_meta(DIAGNOSE_DIR, {j.id: {"file": f"{DIAGNOSE_DIR}/{j.id}.json",
                                         "dataset": j.model.key.dataset,
                                         "arch": j.model.key.arch, "preset": j.preset_name,
                                         "eta": j.eta, "t": j.t} for j in plan.diagnoses})
    todo = [j for j in plan.diagnoses if not diagnosis_path(run_dir, j).is_file()]
    log(f"[diagnose] {len(plan.diagnoses)} diagnoses: {len(plan.diagnoses) - len(todo)} "
        f"already done, {len(todo)} to compute")
    datasets = {}
    for job in todo:
        name = job.model.key.dataset
        if name not in datasets:
            datasets[name] = load_dataset(name, data_dir)

        def ckpt(m):
            path = run_dir / "checkpoints" / m.checkpoint_name
            return checkpoint_from_bytes(path.read_bytes(), str(path))

        settings = DiagnoseSettings(times=(job.t,) if job.t is not None else (),
                                    repeats=job.repeats, test_subset=job.test_subset,
                                    engine=engine)
        diag = diagnose(ckpt(job.model), datasets[name], job.preset, settings,
                        compare=ckpt(job.compare) if job.compare else None,
                        compute_device=compute_device, progress=progress)
        data = json.dumps(diag.to_dict()).encode()
        atomic_write(diagnosis_path(run_dir, job), lambda tmp, d=data: Path(tmp).write_bytes(d))
        log(f"[diagnose] {job.label}: {diag.seconds:.1f} s")
    return len(todo)
