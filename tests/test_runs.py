import json
from pathlib import Path

import pytest

from seal import runs
from seal.runs import RunDirectory, RunError


def started_run(path, config):
    run = RunDirectory(path)
    run.start(config, resume=False)
    run.append_unit("u", [{"reward": 1.0}])
    return run


def test_a_run_saved_before_a_setting_existed_resumes_only_at_that_settings_old_value(tmp_path):
    started_run(tmp_path, {"lora": {"rank": 4}, "seed": 0})
    RunDirectory(tmp_path).start({"lora": {"rank": 4, "base_precision": "fp32"}, "seed": 0}, resume=True)
    assert json.loads((tmp_path / "config.json").read_text())["lora"]["base_precision"] == "fp32"
    with pytest.raises(RunError, match=r"changed: lora\.base_precision \"fp32\" -> \"bf16\"\)"):
        RunDirectory(tmp_path).start({"lora": {"rank": 4, "base_precision": "bf16"}, "seed": 0}, resume=True)


def test_resuming_with_other_settings_names_each_of_them(tmp_path):
    started_run(tmp_path, {"lora": {"rank": 4}, "seed": 0, "n_passages": 2})
    with pytest.raises(RunError, match=r"changed: lora\.rank 4 -> 8, lora\.targets unset -> \[\"q\"\], seed 0 -> 1\)"):
        RunDirectory(tmp_path).start({"lora": {"rank": 8, "targets": ["q"]}, "seed": 1, "n_passages": 2}, resume=True)
    grown = {"lora": {"rank": 4}, "seed": 0, "n_passages": 5}
    RunDirectory(tmp_path).start(grown, resume=True, extendable=frozenset({"n_passages"}))


def test_a_nested_setting_named_extendable_may_change_on_resume_and_only_it(tmp_path):
    started_run(tmp_path, {"restem": {"rounds": 2, "k": 5}})
    more_rounds = frozenset({"restem.rounds"})
    RunDirectory(tmp_path).start({"restem": {"rounds": 3, "k": 5}}, resume=True, extendable=more_rounds)
    assert json.loads((tmp_path / "config.json").read_text())["restem"]["rounds"] == 3
    with pytest.raises(RunError, match=r"changed: restem\.k 5 -> 8\)"):
        RunDirectory(tmp_path).start({"restem": {"rounds": 3, "k": 8}}, resume=True, extendable=more_rounds)


def test_a_run_records_each_machine_it_computed_on(tmp_path, monkeypatch):
    started_run(tmp_path, {"seed": 0})
    (here,) = json.loads((tmp_path / "config.json").read_text())["machines"]
    assert here["cpu"] and here["device"] in ("cpu", "cuda") and isinstance(here["native_bf16"], bool)
    RunDirectory(tmp_path).start({"seed": 0}, resume=True)  # the same machine again: listed once
    assert json.loads((tmp_path / "config.json").read_text())["machines"] == [here]
    elsewhere = {**here, "cpu": "Intel(R) Xeon(R) Platinum 8480+", "native_bf16": True}
    monkeypatch.setattr(runs, "describe", lambda: elsewhere)
    RunDirectory(tmp_path).start({"seed": 0}, resume=True)  # allowed: the config, not the machine, must match
    assert json.loads((tmp_path / "config.json").read_text())["machines"] == [here, elsewhere]


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="Linux resets a process's peak memory")
def test_peak_memory_starts_afresh_when_reset():
    import torch

    from seal.machine import peak_memory_mb, reset_peak_memory

    held = torch.ones(2**27)  # 512 MiB, written, so resident
    assert held.sum() > 0
    before = peak_memory_mb("cpu")
    del held
    reset_peak_memory("cpu")
    assert peak_memory_mb("cpu") < before - 256  # what training records starts with training
