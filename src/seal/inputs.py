"""Reading user-supplied input files, with one-line errors that name the file."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any


class InputError(ValueError):
    """Malformed input; the message names the file (and item and field where it can)."""


def read_json(path: Path, lines: bool = False) -> Any:
    """The JSON document in ``path`` (with ``lines``, a file of one document per line, as a list: JSON
    lines is also read so when a single document does not parse); any way of failing is one
    :class:`InputError` naming the file."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a directory, expected a JSON file") from None
    except UnicodeDecodeError as error:
        raise InputError(f"{path}: not UTF-8 text ({error.reason} at byte {error.start})") from None
    except OSError as error:
        raise InputError(f"{path}: cannot be read ({error.strerror or error})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        if not (lines and error.msg == "Extra data"):
            raise InputError(f"{path}: not valid JSON ({error})") from None
    except RecursionError:
        raise InputError(f"{path}: JSON nested too deeply to be data of this kind") from None
    documents = []
    for number, line in enumerate(text.splitlines(), start=1):
        try:
            documents += [json.loads(line)] if line.strip() else []
        except (json.JSONDecodeError, RecursionError) as error:
            raise InputError(f"{path}, line {number}: not valid JSON ({error})") from None
    return documents


def finite_float(text: str) -> float:
    """An argparse type: a finite number (NaN and infinities are refused, naming the flag)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value
