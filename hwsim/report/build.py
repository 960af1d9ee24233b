"""The report as a whole: :class:`Report` holds everything it shows, and :func:`build_report`
computes it from one results store (no checkpoint, dataset or model is loaded)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from hwsim.data import dataset_info
from hwsim.errors import HwsimError
from hwsim.report.analysis import (
    Group,
    PaperMetric,
    Unlearned,
    build_groups,
    build_paper_metrics,
    find_unlearned,
    noise_types,
)
from hwsim.report.answers import Answer, Findings, build_answers
from hwsim.report.context import (
    convention_lines,
    model_rows,
    preset_lines,
    reading_guide,
    setup_lines,
    small_run_reasons,
)
from hwsim.report.diagnosis import diagnosis_figures, load_diagnoses
from hwsim.report.figures import (
    FigureSpec,
    bn_layer_figures,
    eta_figures,
    forest_figures,
    remedy_figures,
    time_figures,
)
from hwsim.report.trends import Trend, bn_layer_counts, bn_trends
from hwsim.report.verdicts import COMPARISONS, Verdict, build_verdicts, remedy_comparisons
from hwsim.stats import LEARNED_FACTOR, has_learned
from hwsim.study.store import Store


@dataclass
class Report:
    """Everything the report shows, computed from one results store."""

    title: str
    store_path: str
    study: str  # "name — description", or "" without study metadata
    datasets: list[str]
    answers: dict[str, list[Answer]]  # per dataset, in reading order
    unlearned: list[Unlearned]  # models left out of every analysis
    setup: list[str]
    small_run: list[str]  # why the numbers are not publication grade; empty if they are
    guide: str  # what the variants and normalised accuracy mean
    presets: list[str]
    models: list[dict]
    groups: list[Group]  # every group, unlearned models' ones included (marked)
    paper_metrics: list[PaperMetric]
    verdicts: list[Verdict]
    trends: list[Trend]
    figures: list[FigureSpec]  # every figure; FigureSpec.kind/.dataset say where it goes
    notes: list[str] = field(default_factory=list)


def build_report(store: Store) -> Report:
    """Compute answers, tables, verdicts and figure data from ``store``.

    Raises:
        HwsimError: the store holds no cells.
    """
    cells = store.cells()
    if not cells:
        raise HwsimError(f"{store.path}: the results store holds no results yet; "
                         "run 'hwsim study run STUDY.yaml --out FOLDER' first")
    models = store.models()
    meta = store.meta()
    study = meta.get("study") or {}
    factor = study.get("learned_factor", LEARNED_FACTOR)
    digital = {(m["dataset"], m["arch"], m["bn"], m["seed"], m.get("hwa") or 0.0):
               m["digital_accuracy"] for m in models}
    unlearned = find_unlearned(models, factor)

    groups = build_groups(cells, digital, unlearned)
    learned = [g for g in groups if g.learned]
    datasets = sorted({g.dataset for g in groups})
    types = noise_types(meta)
    paper_metrics = build_paper_metrics(groups, types)
    remedies = remedy_comparisons({g.variant for g in learned}, study.get("hwa_clip"))
    verdicts = build_verdicts(groups, [*COMPARISONS, *remedies])
    bn_layers = bn_layer_counts(models)
    trends = [t for d in datasets for t in bn_trends(d, groups, bn_layers)]
    standard = [g for g in learned if not g.hwa]  # HWA curves are in the remedies' figures
    diagnoses = [d for d in load_diagnoses(Path(store.path).parent, meta)
                 if has_learned(d.digital_accuracy,
                                dataset_info(d.meta["dataset"]).num_classes, factor)]
    figures = [*forest_figures(verdicts), *bn_layer_figures(trends), *time_figures(standard),
               *eta_figures(standard, types), *forest_figures(verdicts, remedies, remedies=True),
               *remedy_figures(learned), *(f for d in diagnoses for f in diagnosis_figures(d))]
    presets = meta.get("presets") or {}
    answers = {d: build_answers(Findings(
        dataset=d, verdicts=[v for v in verdicts if v.dataset == d],
        paper_metrics=[p for p in paper_metrics if p.dataset == d],
        trends=[t for t in trends if t.dataset == d], presets=presets,
        figures=[f for f in figures if f.dataset == d],
        groups=[g for g in learned if g.dataset == d], remedies=remedies,
        recalibration=meta.get("recalibration") or {},
        diagnoses=[x for x in diagnoses if x.meta["dataset"] == d])) for d in datasets}
    title = f"hwsim report: {study['name']}" if study.get("name") else "hwsim report"
    about = ""
    if study.get("name"):
        desc = " ".join(str(study.get("description") or "").split()).rstrip(".")
        about = study["name"] + (f" — {desc}" if desc else "")
    return Report(
        title=title,
        store_path=str(store.path),
        study=about,
        datasets=datasets,
        answers=answers,
        unlearned=unlearned,
        setup=setup_lines(meta, models, cells, datasets),
        small_run=small_run_reasons(meta, models, cells, datasets),
        guide=reading_guide({g.variant for g in groups}, study.get("hwa_clip")),
        presets=preset_lines(meta, sorted({c["preset"] for c in cells})),
        models=model_rows(models, unlearned),
        groups=groups,
        paper_metrics=paper_metrics,
        verdicts=verdicts,
        trends=trends,
        figures=figures,
        notes=convention_lines(groups, paper_metrics, factor),
    )
