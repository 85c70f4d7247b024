import json

import pytest

from seal.domains.knowledge.data import DataError, demo_data_path, load_passages, passage_id
from seal.inputs import InputError
from tests.conftest import PASSAGES, SHARED_DATA


def write(tmp_path, payload) -> str:
    path = tmp_path / "data.json"
    path.write_text(payload if isinstance(payload, str) else json.dumps(payload))
    return str(path)


def test_loads_squad_format(squad_file):
    passages = load_passages(squad_file)
    assert [p.title for p in passages] == ["Varnholt Bridge", "Quenalite"]
    assert passages[0].questions[1].answer == "Ottilie Brask"
    assert passages[0].id == passage_id(PASSAGES[0]["context"])
    assert passages[0].self_edits == ()


def test_accepts_self_edit_schema(self_edit_file):
    passages = load_passages(self_edit_file)
    assert passages[0].self_edits[0].startswith("Varnholt Bridge is notable")


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ("{not json", "not valid JSON"),
        ({"title": "x"}, "expected a non-empty JSON list"),
        ([], "expected a non-empty JSON list"),
        (["text"], "item 0: expected an object"),
        (
            [{"context": "c", "questions": [{"question": "q", "answer": "a"}]}],
            "item 0: field 'title' must be a string, is missing",
        ),
        (
            [{"title": 3, "context": "c", "questions": [{"question": "q", "answer": "a"}]}],
            "item 0: field 'title' must be a string, is a int",
        ),
        ([{"title": "t", "context": "c", "questions": []}], "item 0: field 'questions' must be a non-empty list"),
        ([{"title": "t", "context": "c", "questions": [{"question": "q"}]}], "item 0: questions[0]: field 'answer'"),
        (
            [{"title": "t", "context": " ", "questions": [{"question": "q", "answer": "a"}]}],
            "item 0: field 'context' is empty",
        ),
        (
            [{"title": "t", "context": "c", "questions": [{"question": "q", "answer": "a"}], "completions": [1]}],
            "'completions' must be a list of strings",
        ),
    ],
)
def test_malformed_input_names_file_item_and_field(tmp_path, payload, message):
    path = write(tmp_path, payload)
    with pytest.raises(InputError) as error:
        load_passages(path)
    text = str(error.value)
    assert path in text and message in text and "\n" not in text


def test_duplicate_passages_are_rejected(tmp_path):
    path = write(tmp_path, PASSAGES + [PASSAGES[0]])
    with pytest.raises(DataError, match="item 2: field 'context' repeats item 0"):
        load_passages(path)


def test_later_bad_item_is_reported_with_its_index(tmp_path):
    path = write(tmp_path, PASSAGES + [{"title": "t", "context": "c", "questions": "none"}])
    with pytest.raises(DataError, match="item 2: field 'questions'"):
        load_passages(path)


def test_demo_passages_are_valid_and_answerable_from_text():
    passages = load_passages(demo_data_path())
    assert 8 <= len(passages) <= 12
    for p in passages:
        assert 3 <= len(p.questions) <= 5
        assert all(q.answer in p.context for q in p.questions)


@pytest.mark.skipif(not (SHARED_DATA / "squad" / "squad_val.json").exists(), reason="shared data absent")
def test_paper_splits_partition_the_squad_passages():
    path = SHARED_DATA / "squad" / "squad_val.json"
    evaluation, train = load_passages(path, "eval"), load_passages(path, "train")
    assert (len(evaluation), len(train)) == (200, 1867)
    reference = json.loads((SHARED_DATA / "seal-reference" / "selfedits" / "gpt4_1_val.json").read_text())
    assert {p.id for p in evaluation} == {passage_id(item["context"]) for item in reference}
