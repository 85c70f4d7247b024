"""ARC grids: validation, the text format the language model reads and writes, and tasks.

A grid is a 2-D integer array of colours 0-9, at most 30 cells on a side.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np

MAX_SIDE = 30
_GRID_LINE = re.compile(r"[0-9]+")


class GridError(ValueError):
    """A malformed grid; the message names where it was found and what is wrong."""


def as_grid(value: Any, where: str) -> np.ndarray:
    """Validate a nested list (or array) of colours and return it as a 2-D int64 array.

    Raises ``GridError("{where}: ...")`` naming the first problem: not a list of rows, an empty
    grid, ragged rows, a cell that is not an int, a colour outside 0-9, or a side over 30.
    """
    rows = value.tolist() if isinstance(value, np.ndarray) else value
    if not isinstance(rows, (list, tuple)):
        raise GridError(f"{where}: expected a list of rows, got {type(rows).__name__}")
    for r, row in enumerate(rows):
        if not isinstance(row, (list, tuple, np.ndarray)):
            raise GridError(f"{where}: row {r} is not a list of cells, got {type(row).__name__}")
    if len(rows) == 0 or len(rows[0]) == 0:
        raise GridError(f"{where}: empty grid")
    width = len(rows[0])
    for r, row in enumerate(rows):
        if len(row) != width:
            raise GridError(f"{where}: row {r} has {len(row)} cells, row 0 has {width}")
        for c, cell in enumerate(row):
            _check_cell(cell, f"{where}: row {r}, column {c}")
    if len(rows) > MAX_SIDE or width > MAX_SIDE:
        raise GridError(f"{where}: grid is {len(rows)}x{width}, more than {MAX_SIDE} cells on a side")
    return np.array(rows, dtype=np.int64)


def _check_cell(cell: Any, where: str) -> None:
    if isinstance(cell, (bool, np.bool_)) or not isinstance(cell, (int, np.integer)):
        raise GridError(f"{where}: {cell!r} is not an integer colour")
    if not 0 <= cell <= 9:
        raise GridError(f"{where}: colour {int(cell)} outside 0-9")


def grid_to_text(grid: np.ndarray) -> str:
    """One line per row, digits without separators: ``[[0, 1, 2], [3, 4, 0]]`` -> ``"012\\n340"``."""
    return "\n".join("".join(str(int(cell)) for cell in row) for row in grid)


def text_to_grid(text: str) -> np.ndarray | None:
    """Parse the first grid in a model's answer, or return None if there is none.

    The grid is the first run of consecutive lines made only of digits (spaces are ignored);
    it ends at the first other line, blank lines included. Rows must all have the same length.
    """
    rows: list[str] = []
    for line in text.splitlines():
        digits = line.replace(" ", "").replace("\t", "")
        if _GRID_LINE.fullmatch(digits):
            rows.append(digits)
        elif rows:
            break
    if not rows or any(len(row) != len(rows[0]) for row in rows):
        return None
    return np.array([[int(ch) for ch in row] for row in rows], dtype=np.int64)


@dataclass(frozen=True, eq=False)
class Pair:
    """One example: an input grid and its output, or ``output=None`` for an unsolved test input.

    Equality is identity (``eq=False``): numpy arrays have no single truth value to compare by.
    """

    input: np.ndarray
    output: np.ndarray | None

    def grids(self) -> tuple[np.ndarray, ...]:
        """The input and, when known, the output."""
        return (self.input,) if self.output is None else (self.input, self.output)


@dataclass(frozen=True)
class Task:
    """An ARC task: demonstration pairs to learn from and test pairs to answer."""

    id: str
    train: tuple[Pair, ...]
    test: tuple[Pair, ...]

    @property
    def max_side(self) -> int:
        """The largest side of any grid in the task: inputs and known outputs, train and test."""
        return max(max(grid.shape) for pair in self.train + self.test for grid in pair.grids())

    @property
    def seen_side(self) -> int:
        """The largest side of any grid a solver sees: the demonstrations and the test inputs (not the
        test outputs it must find)."""
        grids = [grid for pair in self.train for grid in pair.grids()] + [pair.input for pair in self.test]
        return max(max(grid.shape) for grid in grids)
