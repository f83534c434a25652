"""How the command line tells a user to go on after an error: the library's errors carry typed fields (where a
stopped run's rows are, which column is missing), and only the CLI words them as command-line advice."""

from __future__ import annotations

from llmlabel.errors import LLMLabelError, MissingColumn


def error_line(e: LLMLabelError) -> str:
    """The error's one line, with what to type next."""
    line = str(e)
    if isinstance(e, MissingColumn):
        line += "; pass --label-column"
    if e.kept is not None:
        line += (
            f" ({e.kept.rows} rows finished this run are kept in {e.kept.part.name}; "
            "rerun the same command to continue)"
        )
    return line
