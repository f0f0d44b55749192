"""The DocumentRenderer port: a PrintableDocument laid out as a PDF with pydyf.

pydyf writes PDF objects and nothing more (no layout, no fonts of its own), which keeps the layer
small: the layout here is a column of blocks on US Letter pages, in the PDF standard fonts
Helvetica and Helvetica-Bold (every reader has them, nothing is embedded). Text is encoded
WinAnsi (cp1252): Latin scripts print; a character outside it prints as "?". Content streams
are left uncompressed: a document is a few kilobytes and its text stays searchable.

pydyf is imported with the first PDF, not with this module: every function that settles a
payment builds the receipt mailer, and only a receipt emailed or a PDF asked for needs it.
"""

from __future__ import annotations

import io
import unicodedata
from typing import Any, Final

from clinic_payments.domain.printable import (
    Align,
    Paragraph,
    PrintableDocument,
    Table,
    Totals,
)

PAGE_WIDTH: Final = 612.0  # US Letter, in points
PAGE_HEIGHT: Final = 792.0
MARGIN: Final = 54.0
TEXT_WIDTH: Final = PAGE_WIDTH - 2 * MARGIN
FOOTER: Final = 24.0
BODY_SIZE: Final = 9.0
LINE: Final = 12.0
CELL_GAP: Final = 6.0

REGULAR: Final = "F1"
BOLD: Final = "F2"

# Glyph widths (1/1000 em) of the standard fonts for WinAnsi codes 32..126, from Adobe's AFMs.
_ASCII = [chr(c) for c in range(32, 127)]
_HELVETICA = (
    "278 278 355 556 556 889 667 191 333 333 389 584 278 333 278 278 556 556 556 556 556 556 "
    "556 556 556 556 278 278 584 584 584 556 1015 667 667 722 722 667 611 778 722 278 500 667 "
    "556 833 722 778 667 778 722 667 611 722 667 944 667 667 611 278 278 278 469 556 333 556 "
    "556 500 556 556 278 556 556 222 222 500 222 833 556 556 556 556 333 500 278 556 500 722 "
    "500 500 500 334 260 334 584"
)
_HELVETICA_BOLD = (
    "278 333 474 556 556 889 722 238 333 333 389 584 278 333 278 278 556 556 556 556 556 556 "
    "556 556 556 556 333 333 584 584 584 611 975 722 722 722 722 667 611 778 722 278 556 722 "
    "611 833 722 778 667 778 722 667 611 722 667 944 667 667 611 333 278 333 584 556 333 556 "
    "611 556 611 556 333 611 611 278 278 556 278 889 611 611 611 611 389 556 333 611 556 778 "
    "556 556 500 389 280 389 584"
)
_WIDTHS = {
    REGULAR: dict(zip(_ASCII, map(int, _HELVETICA.split()), strict=True)),
    BOLD: dict(zip(_ASCII, map(int, _HELVETICA_BOLD.split()), strict=True)),
}
# Euro sign, en dash, em dash, bullet, ellipsis, degree sign.
_OTHER = {"\u20ac": 556, "\u2013": 556, "\u2014": 1000, "\u2022": 350, "\u2026": 1000, "\xb0": 400}


def _char_width(char: str, font: str) -> int:
    table = _WIDTHS[font]
    if char in table:
        return table[char]
    base = unicodedata.normalize("NFKD", char)[:1]  # é -> e: accents do not change the width
    if base in table:
        return table[base]
    return _OTHER.get(char, 556)


def text_width(text: str, font: str, size: float) -> float:
    return sum(_char_width(c, font) for c in text) * size / 1000


def encode(text: str) -> bytes:
    """WinAnsi bytes for a text string; control characters become spaces."""
    clean = "".join(" " if unicodedata.category(c).startswith("C") else c for c in text)
    return clean.encode("cp1252", errors="replace")


def wrap(text: str, font: str, size: float, width: float) -> list[str]:
    """Words on lines no wider than `width`; a word longer than a line is cut."""
    lines: list[str] = []
    for paragraph in text.splitlines() or [""]:
        current = ""
        for word in paragraph.split(" "):
            candidate = f"{current} {word}" if current else word
            if text_width(candidate, font, size) <= width:
                current = candidate
                continue
            if current:
                lines.append(current)
            current = word
            while text_width(current, font, size) > width and len(current) > 1:
                cut = len(current) - 1
                while cut > 1 and text_width(current[:cut], font, size) > width:
                    cut -= 1
                lines.append(current[:cut])
                current = current[cut:]
        lines.append(current)
    return lines


class _Pages:
    """Content streams, one per page, and the cursor going down them."""

    def __init__(self) -> None:
        self.streams: list[Any] = []
        self.y = 0.0
        self.new_page()

    def new_page(self) -> None:
        import pydyf

        self.streams.append(pydyf.Stream())
        self.y = PAGE_HEIGHT - MARGIN

    def room_for(self, height: float) -> bool:
        """Whether `height` fits above the footer; if not, start a new page (and say False)."""
        if self.y - height >= MARGIN + FOOTER:
            return True
        self.new_page()
        return False

    def text(
        self,
        x: float,
        y: float,
        text: str,
        font: str = REGULAR,
        size: float = BODY_SIZE,
        align: Align = Align.LEFT,
        gray: float = 0.0,
    ) -> None:
        stream = self.streams[-1]
        if align is Align.RIGHT:
            x -= text_width(text, font, size)
        if gray:
            stream.set_color_rgb(gray, gray, gray)
        stream.begin_text()
        stream.set_font_size(font, size)
        stream.set_text_matrix(1, 0, 0, 1, round(x, 2), round(y, 2))
        stream.show_text_string(encode(text))
        stream.end_text()
        if gray:
            stream.set_color_rgb(0, 0, 0)

    def rule(self, y: float, x1: float = MARGIN, x2: float = MARGIN + TEXT_WIDTH) -> None:
        stream = self.streams[-1]
        stream.set_color_rgb(0.6, 0.6, 0.6, stroke=True)
        stream.set_line_width(0.5)
        stream.move_to(round(x1, 2), round(y, 2))
        stream.line_to(round(x2, 2), round(y, 2))
        stream.stroke()


class PdfRenderer:
    """DocumentRenderer port."""

    def render(self, document: PrintableDocument) -> bytes:
        pages = _Pages()
        self._header(pages, document)
        for block in document.blocks:
            if isinstance(block, Table):
                self._table(pages, block)
            elif isinstance(block, Totals):
                self._totals(pages, block)
            elif isinstance(block, Paragraph):
                self._paragraph(pages, block)
        return self._write(pages, document)

    # -- blocks ---------------------------------------------------------------------------------

    def _header(self, pages: _Pages, doc: PrintableDocument) -> None:
        top = pages.y - 16
        for line in wrap(doc.issuer, BOLD, 16, TEXT_WIDTH * 0.6)[:2]:
            pages.text(MARGIN, top, line, BOLD, 16)
            top -= 19
        for detail in doc.issuer_details:
            for line in wrap(detail, REGULAR, 8.5, TEXT_WIDTH * 0.6):
                pages.text(MARGIN, top, line, REGULAR, 8.5, gray=0.25)
                top -= 11
        pages.text(MARGIN + TEXT_WIDTH, pages.y - 16, doc.title, BOLD, 13, Align.RIGHT)
        pages.y = min(top, pages.y - 26) - 4
        pages.rule(pages.y)
        pages.y -= 18
        label_width = 110.0
        for label, value in doc.facts:
            lines = wrap(value, REGULAR, BODY_SIZE, TEXT_WIDTH - label_width)
            pages.room_for(LINE * len(lines))
            pages.text(MARGIN, pages.y, label, BOLD)
            for line in lines:
                pages.text(MARGIN + label_width, pages.y, line)
                pages.y -= LINE
        pages.y -= 8

    def _table_header(self, pages: _Pages, table: Table, heading: str) -> None:
        pages.text(MARGIN, pages.y, heading, BOLD, 11)
        pages.y -= 16
        x = MARGIN
        for column in table.columns:
            width = column.width * TEXT_WIDTH
            right = x + width - CELL_GAP
            pages.text(
                right if column.align is Align.RIGHT else x,
                pages.y,
                column.title,
                BOLD,
                8.5,
                column.align,
                gray=0.25,
            )
            x += width
        pages.rule(pages.y - 4)
        pages.y -= LINE + 4

    def _table(self, pages: _Pages, table: Table) -> None:
        pages.y -= 6
        pages.room_for(16 + LINE * 3)
        self._table_header(pages, table, table.heading)
        if not table.rows:
            pages.text(MARGIN, pages.y, table.empty, gray=0.4)
            pages.y -= LINE
        for row in table.rows:
            cells = [
                wrap(cell, REGULAR, BODY_SIZE, col.width * TEXT_WIDTH - CELL_GAP)
                for cell, col in zip(row, table.columns, strict=True)
            ]
            height = LINE * max(len(c) for c in cells)
            if not pages.room_for(height):
                self._table_header(pages, table, f"{table.heading} (continued)")
            x = MARGIN
            for lines, column in zip(cells, table.columns, strict=True):
                width = column.width * TEXT_WIDTH
                anchor = x + width - CELL_GAP if column.align is Align.RIGHT else x
                for i, line in enumerate(lines):
                    pages.text(anchor, pages.y - i * LINE, line, align=column.align)
                x += width
            pages.y -= height
        pages.y -= 8

    def _totals(self, pages: _Pages, totals: Totals) -> None:
        label_x = MARGIN + TEXT_WIDTH * 0.5
        right = MARGIN + TEXT_WIDTH - CELL_GAP
        pages.room_for(LINE * len(totals.rows) + 8)
        pages.rule(pages.y + LINE - 3, label_x, MARGIN + TEXT_WIDTH)
        for row in totals.rows:
            pages.room_for(LINE + 4)
            font = BOLD if row.bold else REGULAR
            size = 10.0 if row.bold else BODY_SIZE
            pages.text(label_x, pages.y, row.label, font, size)
            pages.text(right, pages.y, row.value, font, size, Align.RIGHT)
            pages.y -= LINE + (2 if row.bold else 0)
        pages.y -= 8

    def _paragraph(self, pages: _Pages, paragraph: Paragraph) -> None:
        for line in wrap(paragraph.text, REGULAR, BODY_SIZE, TEXT_WIDTH):
            pages.room_for(LINE)
            pages.text(MARGIN, pages.y, line)
            pages.y -= LINE
        pages.y -= 4

    # -- the file ---------------------------------------------------------------------------------

    def _write(self, pages: _Pages, doc: PrintableDocument) -> bytes:
        import pydyf

        pdf = pydyf.PDF()
        fonts = pydyf.Dictionary()
        for name, base in ((REGULAR, "Helvetica"), (BOLD, "Helvetica-Bold")):
            font = pydyf.Dictionary(
                {
                    "Type": "/Font",
                    "Subtype": "/Type1",
                    "BaseFont": f"/{base}",
                    "Encoding": "/WinAnsiEncoding",
                }
            )
            pdf.add_object(font)
            fonts[name] = font.reference
        resources = pydyf.Dictionary({"Font": fonts})
        pdf.add_object(resources)
        count = len(pages.streams)
        for number, stream in enumerate(pages.streams, start=1):
            _footer(stream, f"{doc.issuer} - {doc.title} - page {number} of {count}")
            pdf.add_object(stream)
            page = pydyf.Dictionary(
                {
                    "Type": "/Page",
                    "Parent": pdf.pages.reference,
                    "MediaBox": pydyf.Array([0, 0, PAGE_WIDTH, PAGE_HEIGHT]),
                    "Contents": stream.reference,
                    "Resources": resources.reference,
                }
            )
            pdf.add_page(page)
        pdf.info["Title"] = pydyf.String(f"{doc.title} - {doc.issuer}")
        pdf.info["Producer"] = pydyf.String("clinic-payments")
        out = io.BytesIO()
        pdf.write(out)
        return out.getvalue()


def _footer(stream: Any, text: str) -> None:
    size = 7.5
    stream.set_color_rgb(0.45, 0.45, 0.45)
    stream.begin_text()
    stream.set_font_size(REGULAR, size)
    x = MARGIN + TEXT_WIDTH - text_width(text, REGULAR, size)
    stream.set_text_matrix(1, 0, 0, 1, round(x, 2), MARGIN - 10)
    stream.show_text_string(encode(text))
    stream.end_text()
    stream.set_color_rgb(0, 0, 0)
