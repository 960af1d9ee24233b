"""The report as a whole: :class:`Report` holds everything it shows, and :func:`build_report`
computes it from one results store (no checkpoint, dataset or model is loaded)."""

from __future__ import annotations

from dataclasses import dataclass, field

from hwsim.errors import HwsimError
from hwsim.report.analysis import (
    Group,
    PaperMetric,
    Verdict,
    bn_layer_counts,
    build_groups,
    build_paper_metrics,
    build_verdicts,
    noise_types,
    summary_lines,
)
from hwsim.report.context import convention_lines, model_rows, preset_lines, setup_lines
from hwsim.report.figures import FigureSpec, bn_layer_figures, eta_figures, time_figures
from hwsim.store import Store


@dataclass
class Report:
    """Everything the report shows, computed from one results store."""

    title: str
    store_path: str
    datasets: list[str]
    setup: list[str]
    presets: list[str]
    models: list[dict]
    groups: list[Group]
    paper_metrics: list[PaperMetric]
    verdicts: list[Verdict]
    summaries: dict[str, list[str]]
    figures: list[FigureSpec]
    notes: list[str] = field(default_factory=list)


def build_report(store: Store) -> Report:
    """Compute tables, verdicts and figure data from ``store``.

    Raises:
        HwsimError: the store holds no cells.
    """
    cells = store.cells()
    if not cells:
        raise HwsimError(f"{store.path}: the results store holds no results yet; "
                         "run 'hwsim study run STUDY.yaml --out FOLDER' first")
    models = store.models()
    meta = store.meta()
    digital = {(m["dataset"], m["arch"], m["bn"], m["seed"]): m["digital_accuracy"]
               for m in models}

    groups = build_groups(cells, digital)
    datasets = sorted({g.dataset for g in groups})
    types = noise_types(meta)
    paper_metrics = build_paper_metrics(groups, types)
    verdicts = build_verdicts(groups)
    bn_layers = bn_layer_counts(models)
    study = meta.get("study") or {}
    title = f"hwsim report: {study['name']}" if study.get("name") else "hwsim report"
    summaries = {d: summary_lines(d, groups, verdicts, bn_layers) for d in datasets}
    figures = [*time_figures(groups), *eta_figures(groups, types),
               *bn_layer_figures(groups, bn_layers)]
    return Report(
        title=title,
        store_path=str(store.path),
        datasets=datasets,
        setup=setup_lines(meta, models, cells, datasets),
        presets=preset_lines(meta, sorted({c["preset"] for c in cells})),
        models=model_rows(models),
        groups=groups,
        paper_metrics=paper_metrics,
        verdicts=verdicts,
        summaries=summaries,
        figures=figures,
        notes=convention_lines(groups, paper_metrics),
    )

