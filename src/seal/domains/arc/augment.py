"""Grid transformations: the building blocks of test-time training (TTT) on ARC tasks.

Test-time training fine-tunes on a task's own demonstrations, augmented by applying one
transform to both grids of a pair. At answer time the model may also be shown a transformed
test input (``INVERTIBLE_FOR_VOTING``); its answer is mapped back with ``inverse``.

Families (``FAMILIES``), every transform applied to whole grids:

- ``basic``: the seven non-identity symmetries of the square (rotations, flips, transposes).
- ``size``: upscale each cell to a 2x2 block, or stretch x2 horizontally or vertically.
- ``chain``: each basic transform followed by ``upscale2``.
- ``repeat``: tile the grid 2x1 (two copies stacked), 1x2 (side by side) or 2x2.
- ``reflect``: the grid beside its mirror image, mirror below or above, right or left.

Test-time training also uses random rolls (:func:`random_roll`): the grid shifted cyclically by up
to three cells along each axis, drawn anew for each training example (the official code's
``RandomTranslateXY``). A self-edit's ``basic`` choice trains on the basic and reflect families
and a roll, as the official ``basic`` augmenters do.

Size-changing transforms can push a grid past 30 cells on a side; families never skip on their
own, so callers check each grid with ``fits`` before using a transform.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from seal.domains.arc.grids import MAX_SIDE, Pair

GridFn = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Transform:
    """A named grid -> grid function; ``inverse`` is None when it cannot be undone."""

    name: str
    forward: GridFn
    inverse: GridFn | None

    def __call__(self, grid: np.ndarray) -> np.ndarray:
        return self.forward(grid)


def compose(first: Transform, second: Transform) -> Transform:
    """``first`` then ``second``; invertible when both are."""
    name = f"{first.name}+{second.name}"

    def forward(grid: np.ndarray) -> np.ndarray:
        return second(first(grid))

    first_inverse, second_inverse = first.inverse, second.inverse
    if first_inverse is None or second_inverse is None:
        return Transform(name, forward, None)

    def inverse(grid: np.ndarray) -> np.ndarray:
        return first_inverse(second_inverse(grid))

    return Transform(name, forward, inverse)


def fits(grid: np.ndarray, transform: Transform) -> bool:
    """Whether ``transform(grid)`` stays within 30 cells on a side."""
    return max(transform(grid).shape) <= MAX_SIDE


def _copy(grid: np.ndarray) -> np.ndarray:
    return np.array(grid, copy=True)


def _rotate90(grid: np.ndarray) -> np.ndarray:
    """Clockwise quarter turn."""
    return np.rot90(grid, -1).copy()


def _rotate180(grid: np.ndarray) -> np.ndarray:
    return np.rot90(grid, 2).copy()


def _rotate270(grid: np.ndarray) -> np.ndarray:
    return np.rot90(grid, 1).copy()


def _flip_horizontal(grid: np.ndarray) -> np.ndarray:
    """Mirror left-right."""
    return np.fliplr(grid).copy()


def _flip_vertical(grid: np.ndarray) -> np.ndarray:
    """Mirror top-bottom."""
    return np.flipud(grid).copy()


def _transpose(grid: np.ndarray) -> np.ndarray:
    """Reflect across the main diagonal."""
    return grid.T.copy()


def _anti_transpose(grid: np.ndarray) -> np.ndarray:
    """Reflect across the anti-diagonal."""
    return np.rot90(grid, 2).T.copy()


IDENTITY = Transform("identity", _copy, _copy)

BASIC: list[Transform] = [
    Transform("rotate90", _rotate90, _rotate270),
    Transform("rotate180", _rotate180, _rotate180),
    Transform("rotate270", _rotate270, _rotate90),
    Transform("flip_horizontal", _flip_horizontal, _flip_horizontal),
    Transform("flip_vertical", _flip_vertical, _flip_vertical),
    Transform("transpose", _transpose, _transpose),
    Transform("anti_transpose", _anti_transpose, _anti_transpose),
]


def _stretch(name: str, rows: int, cols: int) -> Transform:
    """Each cell becomes a ``rows`` x ``cols`` block; the inverse keeps one cell per block."""
    return Transform(
        name,
        lambda grid: np.repeat(np.repeat(grid, rows, axis=0), cols, axis=1),
        lambda grid: grid[::rows, ::cols].copy(),
    )


def _tile(rows: int, cols: int) -> Transform:
    """``rows`` x ``cols`` copies of the grid; the inverse keeps the top-left copy."""
    return Transform(
        f"tile_{rows}x{cols}",
        lambda grid: np.tile(grid, (rows, cols)),
        lambda grid: grid[: grid.shape[0] // rows, : grid.shape[1] // cols].copy(),
    )


def _reflect(axis: int, mirror_first: bool) -> Transform:
    """The grid and its mirror image along ``axis`` (0: below each other, 1: side by side), the mirror
    first with ``mirror_first``; the inverse keeps the original half."""
    direction = ("down", "right")[axis] if not mirror_first else ("up", "left")[axis]

    def forward(grid: np.ndarray) -> np.ndarray:
        mirrored = np.flip(grid, axis)
        return np.concatenate([mirrored, grid] if mirror_first else [grid, mirrored], axis=axis)

    def inverse(grid: np.ndarray) -> np.ndarray:
        half = grid.shape[axis] // 2
        kept = slice(half, None) if mirror_first else slice(None, half)
        return (grid[kept] if axis == 0 else grid[:, kept]).copy()

    return Transform(f"reflect_{direction}", forward, inverse)


def random_roll(rng: np.random.Generator) -> Transform:
    """A cyclic shift by 0-3 cells down and 0-3 right (modulo each grid's size), drawn from ``rng``."""
    down, right = (int(n) for n in rng.integers(0, 4, size=2))

    def shifted(grid: np.ndarray, sign: int) -> np.ndarray:
        return np.roll(grid, (sign * (down % grid.shape[0]), sign * (right % grid.shape[1])), axis=(0, 1))

    return Transform(f"roll_{down}_{right}", lambda grid: shifted(grid, 1), lambda grid: shifted(grid, -1))


SIZE: list[Transform] = [
    _stretch("upscale2", 2, 2),
    _stretch("stretch_horizontal2", 1, 2),
    _stretch("stretch_vertical2", 2, 1),
]
CHAIN: list[Transform] = [compose(basic, SIZE[0]) for basic in BASIC]
REPEAT: list[Transform] = [_tile(2, 1), _tile(1, 2), _tile(2, 2)]
REFLECT: list[Transform] = [_reflect(axis, mirror_first) for axis in (0, 1) for mirror_first in (False, True)]

FAMILIES: dict[str, list[Transform]] = {
    "basic": BASIC,
    "size": SIZE,
    "chain": CHAIN,
    "repeat": REPEAT,
    "reflect": REFLECT,
}

INVERTIBLE_FOR_VOTING: list[Transform] = [IDENTITY, *BASIC]


def permute_colours(grid: np.ndarray, permutation: np.ndarray) -> np.ndarray:
    """Recolour ``grid``: colour ``c`` becomes ``permutation[c]``; ``permutation`` orders 0-9."""
    permutation = np.asarray(permutation)
    if permutation.shape != (10,) or not np.array_equal(np.sort(permutation), np.arange(10)):
        raise ValueError(f"colour permutation must be an ordering of 0-9, got {permutation.tolist()}")
    return permutation[grid]


def random_colour_permutation(rng: np.random.Generator, keep_background: bool = True) -> np.ndarray:
    """A uniformly random ordering of colours 0-9; with ``keep_background`` colour 0 stays 0."""
    if keep_background:
        return np.concatenate(([0], 1 + rng.permutation(9)))
    return rng.permutation(10)


def apply_to_task_pair(pair: Pair, transform: Transform) -> Pair:
    """Apply the same transform to a pair's input and (when known) output."""
    output = None if pair.output is None else transform(pair.output)
    return Pair(transform(pair.input), output)
