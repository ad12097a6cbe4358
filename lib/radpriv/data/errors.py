"""The one error type of data loading: :class:`DataError` names the file, row and field of a problem."""

from __future__ import annotations

from pathlib import Path


class DataError(ValueError):
    """A data or manifest problem, with the file, row and field it concerns."""

    def __init__(self, file: str | Path, message: str, row: int | None = None, field: str | None = None,
                 hint: str = "", problems: list[str] | None = None):
        where = str(file)
        if row is not None:
            where += f", row {row}"
        if field is not None:
            where += f", field {field!r}"
        super().__init__(f"{where}: {message}" + (f" -- {hint}" if hint else ""))
        self.file, self.row, self.field = str(file), row, field
        #: every problem found at this stage, one line each (the first is this error's own message)
        self.problems: list[str] = list(problems) if problems else [str(self)]
