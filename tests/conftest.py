import json
from pathlib import Path

import pytest

from seal.models import TINY_RANDOM_MODEL, load_model
from tests.fake_judge import fake_judge  # noqa: F401  (fixture)

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

PASSAGES_FILE = Path(__file__).parent / "data" / "two_passages.json"
PASSAGES = json.loads(PASSAGES_FILE.read_text())


@pytest.fixture(scope="session")
def tiny():
    return load_model(TINY_RANDOM_MODEL)


@pytest.fixture
def squad_file() -> Path:
    return PASSAGES_FILE


@pytest.fixture
def self_edit_file(tmp_path: Path) -> Path:
    path = tmp_path / "self_edits.json"
    items = [dict(p, completions=[f"{p['title']} is notable.\nIt is described in a passage.", ""]) for p in PASSAGES]
    path.write_text(json.dumps(items))
    return path
