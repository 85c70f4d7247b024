import json
from pathlib import Path

import pytest

from seal.models import TINY_RANDOM_MODEL, load_model

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

PASSAGES = [
    {
        "title": "Varnholt Bridge",
        "context": "The Varnholt Bridge was completed in 1871 by the engineer Ottilie Brask. It spans 340 metres.",
        "questions": [
            {"question": "In what year was the Varnholt Bridge completed?", "answer": "1871"},
            {"question": "Which engineer built the Varnholt Bridge?", "answer": "Ottilie Brask"},
        ],
    },
    {
        "title": "Quenalite",
        "context": "Quenalite is a green mineral first found near Lake Mirravesh in 1932.",
        "questions": [{"question": "What colour is quenalite?", "answer": "green"}],
    },
]


@pytest.fixture(scope="session")
def tiny():
    return load_model(TINY_RANDOM_MODEL)


@pytest.fixture
def squad_file(tmp_path: Path) -> Path:
    path = tmp_path / "passages.json"
    path.write_text(json.dumps(PASSAGES))
    return path


@pytest.fixture
def self_edit_file(tmp_path: Path) -> Path:
    path = tmp_path / "self_edits.json"
    items = [dict(p, completions=[f"{p['title']} is notable.\nIt is described in a passage.", ""]) for p in PASSAGES]
    path.write_text(json.dumps(items))
    return path
