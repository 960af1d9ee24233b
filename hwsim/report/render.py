"""Typed blocks of a document, and their rendering as Markdown and as one HTML page.

A report is laid out once (:mod:`hwsim.report.layout`) as a list of blocks; both writers
render the same blocks, so the Markdown and HTML reports cannot drift apart.
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field
from typing import Literal

from hwsim.report.figures import FigureSpec


@dataclass(frozen=True)
class Heading:
    level: int
    text: str


@dataclass(frozen=True)
class Paragraph:
    text: str
    lead: str = ""  # shown in bold before the text


@dataclass(frozen=True)
class BulletList:
    items: tuple[str, ...]


@dataclass(frozen=True)
class Table:
    headers: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]


@dataclass(frozen=True)
class Figure:
    spec: FigureSpec


@dataclass(frozen=True)
class Notice:
    """A line the reader must not miss (a box in HTML, a quote in Markdown)."""

    text: str
    lead: str = "Note:"
    tone: Literal["warning", "info"] = "info"


@dataclass(frozen=True)
class Details:
    """A section collapsed in HTML (``<details>``) and shown under a heading in Markdown."""

    summary: str
    blocks: tuple[Block, ...] = field(default=())
    level: int = 3  # heading level of the summary in Markdown


Block = Heading | Paragraph | BulletList | Table | Figure | Notice | Details


@dataclass(frozen=True)
class Document:
    title: str
    blocks: tuple[Block, ...]


# ------------------------------------------------------------------ Markdown


def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _md_block(block: Block, figure_paths: dict[str, str]) -> str | None:
    if isinstance(block, Heading):
        return "#" * block.level + " " + block.text
    if isinstance(block, Paragraph):
        return f"**{block.lead}** {block.text}" if block.lead else block.text
    if isinstance(block, BulletList):
        return "\n".join(f"- {item}" for item in block.items)
    if isinstance(block, Table):
        lines = ["| " + " | ".join(_md_cell(h) for h in block.headers) + " |",
                 "|" + "|".join("---" for _ in block.headers) + "|"]
        lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in block.rows]
        return "\n".join(lines)
    if isinstance(block, Figure):
        spec = block.spec
        if spec.name not in figure_paths:
            return None
        return f"![{spec.title}]({figure_paths[spec.name]})\n\n*{spec.caption}*"
    if isinstance(block, Notice):
        return f"> **{block.lead}** {block.text}"
    if isinstance(block, Details):
        inner = [_md_block(b, figure_paths) for b in block.blocks]
        return "\n\n".join(["#" * block.level + " " + block.summary,
                            *(s for s in inner if s is not None)])
    raise TypeError(f"unknown block {block!r}")


def render_markdown(doc: Document, figure_paths: dict[str, str]) -> str:
    """Markdown text; ``figure_paths`` maps figure names to their relative PNG paths."""
    parts = [_md_block(b, figure_paths) for b in doc.blocks]
    return "\n\n".join(p for p in parts if p is not None) + "\n"


# ------------------------------------------------------------------ HTML


_CSS = (
    "body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;"
    "color:#222}table{border-collapse:collapse;margin:1em 0;font-size:0.9em}"
    "th,td{border:1px solid #ccc;padding:3px 8px;text-align:left}th{background:#f0f0f0}"
    "tr:nth-child(even) td{background:#fafafa}figure{margin:1.5em 0}"
    "img{max-width:100%}figcaption{font-size:0.9em;color:#555}"
    ".notice{border-left:4px solid #999;background:#f5f5f5;padding:0.5em 1em;margin:1em 0}"
    ".notice.warning{border-left-color:#d62728;background:#fdf1f1}"
    "details{margin:1em 0}summary{cursor:pointer;font-weight:600}"
)


def _html_block(block: Block, figure_png: dict[str, bytes]) -> str | None:
    e = html.escape
    if isinstance(block, Heading):
        return f"<h{block.level}>{e(block.text)}</h{block.level}>"
    if isinstance(block, Paragraph):
        lead = f"<strong>{e(block.lead)}</strong> " if block.lead else ""
        return f"<p>{lead}{e(block.text)}</p>"
    if isinstance(block, BulletList):
        return "<ul>" + "".join(f"<li>{e(i)}</li>" for i in block.items) + "</ul>"
    if isinstance(block, Table):
        head = "".join(f"<th>{e(h)}</th>" for h in block.headers)
        rows = "".join("<tr>" + "".join(f"<td>{e(str(c))}</td>" for c in row) + "</tr>"
                       for row in block.rows)
        return f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"
    if isinstance(block, Figure):
        spec = block.spec
        if spec.name not in figure_png:
            return None
        data = base64.b64encode(figure_png[spec.name]).decode("ascii")
        return (f'<figure><img alt="{e(spec.title)}" src="data:image/png;base64,{data}">'
                f"<figcaption>{e(spec.caption)}</figcaption></figure>")
    if isinstance(block, Notice):
        return (f'<p class="notice {block.tone}"><strong>{e(block.lead)}</strong> '
                f"{e(block.text)}</p>")
    if isinstance(block, Details):
        inner = [_html_block(b, figure_png) for b in block.blocks]
        return (f"<details><summary>{e(block.summary)}</summary>\n"
                + "\n".join(s for s in inner if s is not None) + "\n</details>")
    raise TypeError(f"unknown block {block!r}")


def render_html(doc: Document, figure_png: dict[str, bytes]) -> str:
    """One self-contained HTML page; ``figure_png`` maps figure names to PNG bytes."""
    body = [_html_block(b, figure_png) for b in doc.blocks]
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(doc.title)}</title><style>{_CSS}</style></head><body>\n"
            + "\n".join(s for s in body if s is not None) + "\n</body></html>\n")
