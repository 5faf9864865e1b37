"""The command line's consoles: whatever they print is shown as it is, never read as markup.

Captions, concept names, paths, SQL results and error messages are data: a LAION caption
``[pdf] Manual`` or a concept named ``[/b] sofa`` must print as written, and ``:x:`` must not
become an emoji. So markup and emoji are off on every console, and styles come only from
:class:`~rich.text.Text` spans (:func:`styled`), never from parsing a printed string.
"""

from __future__ import annotations

from typing import NoReturn

import typer
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

console = Console(markup=False, emoji=False, highlight=False)
err = Console(stderr=True, markup=False, emoji=False, highlight=False)

# A part of a styled line: plain text, or (text, rich style).
Part = str | tuple[str, str]

# Wider than any table's natural width: measures it unconstrained.
_UNBOUNDED = 1_000_000


def styled(*parts: Part) -> Text:
    """One line from plain and styled parts; no part is parsed for markup."""
    return Text.assemble(*parts)


def fail(message: object) -> NoReturn:
    """Print ``error: MESSAGE`` on stderr as one line and exit with code 2 (a user error).

    A message of several lines (DuckDB's parser errors quote the query and point a caret at it)
    is joined into one; the caret lines say nothing without their alignment.
    """
    lines = [line.strip() for line in str(message).splitlines()]
    text = " ".join(line for line in lines if line.strip("^ "))
    err.print(styled(("error:", "bold red"), " ", text), soft_wrap=True)
    raise typer.Exit(code=2)


def print_table(table: Table, to: Console = console) -> None:
    """Print a table; piped, at its natural width, so that no cell or column is cut.

    A console that is not a terminal is 80 columns wide, and rich fits a wider table into it by
    eliding cells and dropping whole columns (``history`` lost its version numbers). A terminal
    keeps rich's fitting: it is what the user sees, and they can widen the window.
    """
    if to.is_terminal:
        to.print(table)
        return
    natural = Measurement.get(to, to.options.update_width(_UNBOUNDED), table).maximum
    wide = Console(
        file=to.file, width=max(natural, to.width), markup=False, emoji=False, highlight=False
    )
    wide.print(table)
