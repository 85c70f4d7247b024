"""Data off the shared directory: `seal data` builds it from Hugging Face rows, runs find it, record it."""

import json
from pathlib import Path

import pytest

from seal.cli import main
from seal.domains.knowledge import sources
from seal.domains.knowledge.data import DataError, load_passages
from seal.domains.knowledge.evaluate import EvalConfig, run_eval
from seal.engine.lora import LoraConfig
from seal.runs import RunDirectory
from tests.conftest import PASSAGES, PASSAGES_FILE, SHARED_DATA

ROWS = Path(__file__).parent / "data" / "squad_rows.jsonl"


def test_squad_rows_become_passages_grouped_by_context_with_the_first_answer(tmp_path):
    passages = load_passages(ROWS)  # --data takes rows as datasets writes them, too
    assert [(p.title, p.context) for p in passages] == [(p["title"], p["context"]) for p in PASSAGES]
    assert [[(q.question, q.answer) for q in p.questions] for p in passages] == [
        [(q["question"], q["answer"]) for q in p["questions"]] for p in PASSAGES
    ]
    bad = tmp_path / "bad_rows.jsonl"
    bad.write_text(json.dumps({"title": "t", "context": "c", "question": "q?", "answers": {"text": []}}) + "\n")
    with pytest.raises(DataError, match=r"bad_rows.jsonl: row 0: field 'answers.text' holds no answer"):
        load_passages(bad)


def test_seal_data_squad_reads_local_rows_and_insists_on_the_evaluation_passages(tmp_path, capsys):
    assert main(["data", "squad", "--from", str(ROWS), "--out", str(tmp_path)]) == 2
    assert "holds 0 of the paper's 200 evaluation passages" in capsys.readouterr().err
    assert not (tmp_path / sources.SQUAD_FILE).exists()


@pytest.mark.skipif(not (SHARED_DATA / "squad").is_dir(), reason="shared data absent")
def test_seal_data_squad_rebuilds_the_shared_file_from_its_rows(tmp_path):
    shared = json.loads((SHARED_DATA / "squad" / "squad_val.json").read_text())
    rows = tmp_path / "validation.jsonl"
    with open(rows, "w") as handle:
        for passage in shared:
            for i, q in enumerate(passage["questions"]):
                answers = {"text": [q["answer"]], "answer_start": [0]}
                row = {"id": str(i), "title": passage["title"], "context": passage["context"]}
                handle.write(json.dumps({**row, "question": q["question"], "answers": answers}) + "\n")
    assert main(["data", "squad", "--from", str(rows), "--out", str(tmp_path / "data")]) == 0
    assert json.loads((tmp_path / "data" / sources.SQUAD_FILE).read_text()) == shared


@pytest.mark.skipif(not (SHARED_DATA / "seal-reference").is_dir(), reason="shared data absent")
def test_seal_data_seal_reference_finds_checks_and_copies_the_files(tmp_path, capsys):
    checkout = tmp_path / "SEAL" / "knowledge-incorporation" / "data"
    for name in sources.SELF_EDIT_FILES:
        (checkout / "synthetic").mkdir(parents=True, exist_ok=True)
        (checkout / "synthetic" / name).write_text((SHARED_DATA / sources.SELF_EDITS / name).read_text())
    assert main(["data", "seal-reference", "--from", str(tmp_path / "SEAL"), "--out", str(tmp_path / "d")]) == 2
    assert "no base.json in it" in capsys.readouterr().err
    for name in sources.GRADED_FILES:
        (checkout / name).write_text((SHARED_DATA / sources.GRADED / name).read_text())
    assert main(["data", "seal-reference", "--from", str(tmp_path / "SEAL"), "--out", str(tmp_path / "d")]) == 0
    assert sorted(p.name for p in (tmp_path / "d" / sources.SELF_EDITS).iterdir()) == sorted(sources.SELF_EDIT_FILES)


def test_data_is_found_through_seal_data_then_the_default_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no ../shared/data from here
    monkeypatch.setenv("SEAL_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("SEAL_DATA", raising=False)
    with pytest.raises(DataError, match=r"no --data given and no squad/squad_val.json in .*: run `seal data squad`"):
        sources.resolve_data(None)
    default = tmp_path / "cache" / "data" / sources.SQUAD_FILE
    default.parent.mkdir(parents=True)
    default.write_text(PASSAGES_FILE.read_text())
    assert sources.resolve_data(None) == default
    own = tmp_path / "mine" / sources.SQUAD_FILE
    own.parent.mkdir(parents=True)
    own.write_text(PASSAGES_FILE.read_text())
    monkeypatch.setenv("SEAL_DATA", str(tmp_path / "mine"))
    assert sources.resolve_data(None) == own
    assert sources.resolve_data("given.json") == Path("given.json")


def test_a_users_own_file_is_evaluated_whole_and_the_run_records_where_its_data_came_from(tmp_path):
    config = EvalConfig(condition="base", model="tiny-random", data=str(ROWS), answer_tokens=4, lora=LoraConfig(4, 8))
    summary = run_eval(config, tmp_path / "run", progress=False)  # no --split: not the paper's file, so all of it
    assert summary["n_passages"] == 2
    recorded = json.loads((tmp_path / "run" / "config.json").read_text())
    assert recorded["split"] == "all" and recorded["data_path"] == str(ROWS.resolve())
    assert recorded["data_sha256"] == sources.sha256(ROWS)
    changed = tmp_path / "rows.jsonl"
    changed.write_text(ROWS.read_text().replace("1871", "1872"))
    with pytest.raises(Exception, match="changed: data"):
        run_eval(config.__class__(**{**config.__dict__, "data": str(changed)}), tmp_path / "run", resume=True)
    assert RunDirectory(tmp_path / "run").summary()["n_passages"] == 2
