"""One table model, three renderings: Markdown, LaTeX (booktabs) and CSV (lm-eval's `make_table` habit).

A `Table` holds display text *and* the raw value of every cell, footnote marks per cell, the notes
they point to, and the numbered sources. Markdown and LaTeX show the text with superscript marks;
CSV keeps raw numbers (so it can be re-read) and puts the marks in a trailing `notes` column.
"""
from __future__ import annotations

import csv
import io
import numbers
import re
from dataclasses import dataclass, field
from string import ascii_lowercase

MISSING = "—"          # not measured / not published
UNAVAILABLE = "n/a"    # the evaluator could not compute it; always carries a footnote


@dataclass(frozen=True)
class Cell:
    text: str
    value: float | int | str | None = None     # what the CSV holds; None = empty
    marks: tuple[str, ...] = ()


@dataclass
class Table:
    name: str                            # file stem: tables/<name>.{md,tex,csv}
    caption: str
    columns: list[str]
    rows: list[list[Cell]] = field(default_factory=list)
    notes: dict[str, str] = field(default_factory=dict)       # mark -> text, in order of first use
    sources: list[str] = field(default_factory=list)          # cited as [1], [2], ...
    _lettered: int = field(default=0, repr=False)              # automatic marks handed out so far

    def note(self, text: str, mark: str | None = None) -> str:
        """Register a footnote (deduplicated by text) and return its mark: a, b, ... unless given."""
        for existing, existing_text in self.notes.items():
            if existing_text == text:
                return existing
        if mark is None:
            mark = ascii_lowercase[self._lettered] if self._lettered < 26 else f"n{self._lettered + 1}"
            self._lettered += 1
        self.notes[mark] = text
        return mark

    def cite(self, source: str) -> Cell:
        """A cell citing `source` as [n], numbering each distinct source once."""
        if source not in self.sources:
            self.sources.append(source)
        number = self.sources.index(source) + 1
        return Cell(f"[{number}]", source)


def file_stem(text: str) -> str:
    """A name safe for a file: 'PixelDiT-S/4 run' -> 'PixelDiT-S-4-run'."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", str(text)).strip("-")


def text_cell(text: str | None, marks: tuple[str, ...] = ()) -> Cell:
    return Cell(MISSING, None, marks) if text in (None, "") else Cell(str(text), str(text), marks)


def number_cell(value: float | None, decimals: int, marks: tuple[str, ...] = ()) -> Cell:
    if value is None or value != value:   # None or NaN
        return Cell(MISSING, None, marks)
    return Cell(f"{value:.{decimals}f}", float(value), marks)


# --------------------------------------------------------------------------------------- Markdown

def _md_escape(text: str) -> str:
    return text.replace("|", "\\|")


def _md_cell(cell: Cell) -> str:
    marks = f"<sup>{','.join(cell.marks)}</sup>" if cell.marks else ""
    return _md_escape(cell.text) + marks


def numeric_columns(table: Table) -> list[bool]:
    """Per column: True when every filled cell holds a number (such columns are right-aligned)."""
    return [all(row[index].value is None or isinstance(row[index].value, numbers.Real) or row[index].text == UNAVAILABLE
                for row in table.rows) for index in range(len(table.columns))]


def to_markdown(table: Table) -> str:
    rule = "|" + "|".join("---:" if numeric else "---" for numeric in numeric_columns(table)) + "|"
    lines = [f"**{_md_escape(table.caption)}**", "",
             "| " + " | ".join(_md_escape(column) for column in table.columns) + " |", rule]
    lines += ["| " + " | ".join(_md_cell(cell) for cell in row) + " |" for row in table.rows]
    if table.notes or table.sources:
        lines.append("")
    lines += [f"<sup>{mark}</sup> {_md_escape(text)}  " for mark, text in table.notes.items()]
    lines += [f"[{number}] {_md_escape(source)}  " for number, source in enumerate(table.sources, start=1)]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------ LaTeX

_LATEX_SPECIALS = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                   "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
                   "×": r"$\times$", "—": "---", "–": "--", "·": r"$\cdot$", "Σ": r"$\Sigma$",
                   "α": r"$\alpha$", "≈": r"$\approx$", "²": r"$^2$", "‑": "-", "§": r"\S{}"}


def latex_escape(text: str) -> str:
    return "".join(_LATEX_SPECIALS.get(char, char) for char in text)


def _tex_cell(cell: Cell) -> str:
    marks = r"\textsuperscript{" + latex_escape(",".join(cell.marks)) + "}" if cell.marks else ""
    return latex_escape(cell.text) + marks


def to_latex(table: Table) -> str:
    spec = "".join("r" if numeric else "l" for numeric in numeric_columns(table))
    lines = [r"% requires \usepackage{booktabs}", r"\begin{table}[t]", r"\centering", r"\small",
             r"\caption{" + latex_escape(table.caption) + "}", r"\label{tab:" + table.name + "}",
             r"\begin{tabular}{" + spec + "}", r"\toprule",
             " & ".join(latex_escape(column) for column in table.columns) + r" \\", r"\midrule"]
    lines += [" & ".join(_tex_cell(cell) for cell in row) + r" \\" for row in table.rows]
    lines += [r"\bottomrule", r"\end{tabular}"]
    footer = [r"\textsuperscript{" + latex_escape(mark) + "} " + latex_escape(text)
              for mark, text in table.notes.items()]
    footer += [f"[{number}] " + latex_escape(source) for number, source in enumerate(table.sources, start=1)]
    if footer:
        lines += [r"\par\smallskip", r"\begin{minipage}{\linewidth}\footnotesize",
                  *(line + r"\\" for line in footer), r"\end{minipage}"]
    lines.append(r"\end{table}")
    return "\n".join(lines) + "\n"


# -------------------------------------------------------------------------------------------- CSV

def to_csv(table: Table) -> str:
    """Raw values, marks resolved to note text; line 1 is the caption as a `# ` comment (read with skiprows=1)."""
    buffer = io.StringIO()
    buffer.write(f"# {table.caption}\n")
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([*table.columns, "notes"])
    for row in table.rows:
        marks = dict.fromkeys(mark for cell in row for mark in cell.marks)
        notes = "; ".join(f"{mark}: {table.notes[mark]}" for mark in marks)
        writer.writerow([*("" if cell.value is None else cell.value for cell in row), notes])
    return buffer.getvalue()
