"""The comparison report of a study run, built from its results store alone.

The package, by concept:

* :mod:`~hwsim.report.analysis` — the numbers: cell groups, verdicts (Welch 95% CIs), the
  paper's metric, BN-layer trends;
* :mod:`~hwsim.report.context` — setup, presets, models and conventions a reader needs;
* :mod:`~hwsim.report.figures` — what each figure shows and how it is drawn (the only
  matplotlib importer);
* :mod:`~hwsim.report.build` — :class:`Report` and :func:`build_report` (store → report);
* :mod:`~hwsim.report.layout` — the reading order: report → typed blocks;
* :mod:`~hwsim.report.render` — typed blocks → Markdown and HTML;
* :mod:`~hwsim.report.write` — :func:`write_report` (files on disk).
"""

from hwsim.report.analysis import (
    BN_BETTER,
    BN_FOLDED,
    BN_KEPT,
    BN_WORSE,
    FOLD_HELPS,
    FOLD_HURTS,
    NO_BN,
    NO_DIFFERENCE,
    PAPER_CITATION,
    PAPER_RESULTS,
    TOO_FEW,
    Group,
    PaperMetric,
    Verdict,
    condition_label,
    variant_of,
)
from hwsim.report.build import Report, build_report
from hwsim.report.figures import FigureSpec, Series, render_png
from hwsim.report.layout import report_document
from hwsim.report.render import Document, render_html, render_markdown
from hwsim.report.write import FORMATS, write_report

__all__ = ["BN_BETTER", "BN_FOLDED", "BN_KEPT", "BN_WORSE", "FOLD_HELPS", "FOLD_HURTS",
           "FORMATS", "NO_BN", "NO_DIFFERENCE", "PAPER_CITATION", "PAPER_RESULTS", "TOO_FEW",
           "Document", "FigureSpec", "Group", "PaperMetric", "Report", "Series", "Verdict",
           "build_report", "condition_label", "render_html", "render_markdown", "render_png",
           "report_document", "variant_of", "write_report"]
