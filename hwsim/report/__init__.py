"""The comparison report of a study run, built from its results store alone.

The package, by concept:

* :mod:`~hwsim.report.analysis` — the data: variants, cell groups, the paper's metric,
  models that did not learn;
* :mod:`~hwsim.report.verdicts` — comparisons tested at their unit of replication (seeds, or
  paired chips), Holm-corrected per family;
* :mod:`~hwsim.report.trends` — claim 2: the BN gap vs BN layers, exact permutation test;
* :mod:`~hwsim.report.answers` — the answers at the top: one builder per question
  (:mod:`~hwsim.report.answer_base` their shared types, :mod:`~hwsim.report.remedies` the
  remedies' answer);
* :mod:`~hwsim.report.context` — setup, presets (and their mapping), models, conventions;
* :mod:`~hwsim.report.figure_specs` — what each figure shows;
* :mod:`~hwsim.report.figures` — how it is drawn (the only matplotlib importer);
* :mod:`~hwsim.report.build` — :class:`Report` and :func:`build_report` (store → report);
* :mod:`~hwsim.report.layout` — the reading order: report → typed blocks;
* :mod:`~hwsim.report.render` — typed blocks → Markdown and HTML;
* :mod:`~hwsim.report.write` — :func:`write_report` (files on disk).
"""

from hwsim.report.analysis import (
    BN_BETTER,
    BN_FOLDED,
    BN_KEPT,
    BN_RECAL,
    BN_WORSE,
    FOLD_HELPS,
    FOLD_HURTS,
    NO_BN,
    NO_DIFFERENCE,
    PAPER_CITATION,
    PAPER_RESULTS,
    TOO_FEW,
    VARIANT_LABELS,
    Group,
    PaperMetric,
    Unlearned,
    condition_label,
    variant_of,
)
from hwsim.report.answers import ANSWER_BUILDERS, Answer, Findings
from hwsim.report.build import Report, build_report
from hwsim.report.figures import FigureSpec, Series, render_png
from hwsim.report.layout import report_document
from hwsim.report.render import Document, render_html, render_markdown
from hwsim.report.trends import Trend
from hwsim.report.verdicts import COMPARISONS, Comparison, Verdict
from hwsim.report.write import FORMATS, write_report

__all__ = ["ANSWER_BUILDERS", "BN_BETTER", "BN_FOLDED", "BN_KEPT", "BN_RECAL", "BN_WORSE",
           "COMPARISONS", "FOLD_HELPS", "FOLD_HURTS", "FORMATS", "NO_BN", "NO_DIFFERENCE",
           "PAPER_CITATION", "PAPER_RESULTS", "TOO_FEW", "VARIANT_LABELS", "Answer",
           "Comparison", "Document", "FigureSpec", "Findings", "Group", "PaperMetric", "Report",
           "Series", "Trend", "Unlearned", "Verdict", "build_report", "condition_label",
           "render_html", "render_markdown", "render_png", "report_document", "variant_of",
           "write_report"]
