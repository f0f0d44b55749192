"""A printable document: text in blocks (facts, tables, totals, paragraphs), no layout.

An adapter (adapters/pdf.py) lays it out as a PDF; plain_text() reads the same words as the body
of an email.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class Align(StrEnum):
    LEFT = "left"
    RIGHT = "right"


@dataclass(frozen=True)
class Column:
    title: str
    width: float  # share of the text width; a table's columns add up to 1
    align: Align = Align.LEFT


@dataclass(frozen=True)
class Table:
    heading: str
    columns: list[Column]
    rows: list[list[str]]
    empty: str = ""  # said instead of the rows when there are none


@dataclass(frozen=True)
class TotalRow:
    label: str
    value: str
    bold: bool = False


@dataclass(frozen=True)
class Totals:
    rows: list[TotalRow]


@dataclass(frozen=True)
class Paragraph:
    text: str


Block = Table | Totals | Paragraph


@dataclass(frozen=True)
class PrintableDocument:
    filename: str
    issuer: str  # the clinic's name, at the top
    title: str
    facts: list[tuple[str, str]]
    blocks: list[Block] = field(default_factory=list)
    # Under the issuer's name: its legal name, address, phone, email, tax registration.
    issuer_details: list[str] = field(default_factory=list)


def plain_text(doc: PrintableDocument) -> str:
    """The document as plain text (an email body): the same words as the PDF."""
    lines = [doc.issuer, *doc.issuer_details, doc.title, ""]
    lines += [f"{label}: {value}" for label, value in doc.facts]
    for block in doc.blocks:
        lines.append("")
        if isinstance(block, Table):
            lines.append(block.heading)
            if not block.rows and block.empty:
                lines.append(f"  {block.empty}")
            for row in block.rows:
                lines.append("  " + " | ".join(cell for cell in row if cell))
        elif isinstance(block, Totals):
            lines += [f"{row.label}: {row.value}" for row in block.rows]
        else:
            lines.append(block.text)
    return "\n".join(lines) + "\n"
