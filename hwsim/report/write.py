"""Writing a study run's report: ``report.html`` (one self-contained page, figures embedded as
base64 PNG) and/or ``report.md`` with its figures as PNG files beside it."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from hwsim.errors import ConfigError
from hwsim.report.build import build_report
from hwsim.report.figures import render_png
from hwsim.report.layout import report_document
from hwsim.report.render import render_html, render_markdown
from hwsim.study.store import Store

FORMATS = ("html", "md")


def _check_formats(formats: str | Sequence[str]) -> list[str]:
    if isinstance(formats, str):
        formats = formats.split(",")
    chosen = []
    for f in formats:
        f = f.strip().lower()
        if f not in FORMATS:
            raise ConfigError(f"unknown report format {f!r}; choose from: {', '.join(FORMATS)}")
        if f not in chosen:
            chosen.append(f)
    if not chosen:
        raise ConfigError(f"no report format given; choose from: {', '.join(FORMATS)}")
    return chosen


def _write_text(path: Path, text: str) -> None:
    from hwsim.util.runtime import atomic_write

    atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def _write_bytes(path: Path, data: bytes) -> None:
    from hwsim.util.runtime import atomic_write

    atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))


def write_report(run_dir: str | Path, formats: str | Sequence[str] = ("html", "md"),
                 out_dir: str | Path | None = None) -> list[Path]:
    """Write ``report.html`` and/or ``report.md`` (with ``figures/*.png``) for a study run.

    Args:
        run_dir: the run folder holding ``results.sqlite``.
        formats: any of ``"html"`` (one self-contained file) and ``"md"``.
        out_dir: where to write [default: ``run_dir``].

    Returns:
        The paths of the report files written (figure PNGs not included).

    Raises:
        ConfigError: an unknown format.
        HwsimError: no store in ``run_dir``, or a store with no results.
    """
    chosen = _check_formats(formats)
    run_dir = Path(run_dir)
    with Store.open_existing(run_dir) as store:
        report = build_report(store)
    doc = report_document(report)
    out = Path(out_dir) if out_dir is not None else run_dir
    pngs = {f.name: render_png(f) for f in report.figures}
    written = []
    if "html" in chosen:
        path = out / "report.html"
        _write_text(path, render_html(doc, pngs))
        written.append(path)
    if "md" in chosen:
        links = {}
        for name, data in pngs.items():
            _write_bytes(out / "figures" / f"{name}.png", data)
            links[name] = f"figures/{name}.png"
        path = out / "report.md"
        _write_text(path, render_markdown(doc, links))
        written.append(path)
    return written
