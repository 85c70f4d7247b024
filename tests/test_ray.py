"""The Ray executor on a local Ray instance started by the tests: same results as local, faults survived."""

import json
import os
import sys
import textwrap
from functools import partial
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

from seal.domains.knowledge.evaluate import EvalConfig, run_eval  # noqa: E402
from seal.engine.generation import SamplingConfig  # noqa: E402
from seal.engine.lora import LoraConfig  # noqa: E402
from seal.engine.training import TrainConfig  # noqa: E402
from seal.executors import ExecutorSpec, make_executor  # noqa: E402
from seal.runs import RunDirectory  # noqa: E402

# fp32: exact equality across processes with other thread counts holds there (bf16 kernels differ by shape and threads)
TINY_LORA = LoraConfig(rank=4, alpha=8, base_precision="fp32")


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    os.environ["RAY_worker_niceness"] = "0"  # Ray's default (15) starves workers on a busy machine
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import tests/
    yield
    ray.shutdown()
    del os.environ["RAY_worker_niceness"]


def ray_executor(parallel: int = 1):
    return make_executor(ExecutorSpec(kind="ray", parallel=parallel, workers=2))


def square_unless_first_try_of_three(bank, task: int, marker: Path) -> tuple[int, int]:
    if task == 3 and not marker.exists():
        marker.touch()
        os._exit(1)  # the worker process dies in the middle of its task
    return task, os.getpid()


def weight_checksum(bank, task: int) -> tuple[float, int]:
    return float(bank.layers[0].base.weight.sum()), os.getpid()


def test_same_seeds_give_the_same_records_on_ray_as_locally(tmp_path, squad_file):
    config = EvalConfig(
        condition="self-edit", model="tiny-random", data=str(squad_file), split="all", n_self_edits=2,
        sampling=SamplingConfig(temperature=1.0, max_new_tokens=16), lora=TINY_LORA,
        train=TrainConfig(learning_rate=1e-2, epochs=1),
    )  # fmt: skip
    local = run_eval(config, tmp_path / "local", progress=False, executor=make_executor(ExecutorSpec(parallel=1)))
    executor = ray_executor()
    on_ray = run_eval(config, tmp_path / "ray", progress=False, executor=executor)
    executor.close()
    assert local == on_ray

    def records(name):  # completion order may differ; timings and loss rounding are not compared
        rows = RunDirectory(tmp_path / name).records()
        return sorted(json.dumps({k: v for k, v in r.items() if k not in ("seconds", "train_loss")}) for r in rows)

    assert records("local") == records("ray")


def test_a_killed_worker_is_replaced_and_its_task_retried_without_loss_or_duplicates(tmp_path):
    executor = ray_executor()
    executor.use("tiny-random", TINY_LORA)
    results = list(executor.map(partial(square_unless_first_try_of_three, marker=tmp_path / "died"), range(6)))
    assert sorted(task for task, _ in results) == list(range(6))
    assert executor.replaced == 1 and (tmp_path / "died").exists()
    executor.close()


def test_new_weights_reach_the_same_workers_without_a_restart(tmp_path):
    from seal.engine.bank import LoraBank
    from seal.engine.training import TrainingExample, TrainJob
    from seal.models import load_model

    loaded = load_model("tiny-random")
    bank = LoraBank(loaded.model, loaded.tokenizer, TINY_LORA)
    bank.train([TrainJob(0, [TrainingExample("", "Varnholt Bridge")], TrainConfig(learning_rate=1e-1), seed=0)])
    bank.merge(0)
    bank.save_pretrained(tmp_path / "policy")

    executor = ray_executor()
    executor.use("tiny-random", TINY_LORA)
    before = list(executor.map(weight_checksum, range(2)))
    executor.use(str(tmp_path / "policy"), TINY_LORA)
    after = list(executor.map(weight_checksum, range(2)))
    assert {pid for _, pid in before} == {pid for _, pid in after}  # the same actor processes
    assert len({round(s, 3) for s, _ in before}) == 1 and len({round(s, 3) for s, _ in after}) == 1
    assert before[0][0] != pytest.approx(after[0][0])  # ... now holding the new policy
    executor.close()


def divides_by_zero(bank, task: int) -> float:
    return task / 0


def refuses(bank, task: int) -> None:
    raise ValueError(f"task {task} is malformed")


def test_a_worker_failure_is_one_line_naming_its_log():
    from seal.domain import RunStopped

    executor = ray_executor()
    executor.use("tiny-random", TINY_LORA)
    with pytest.raises(RunStopped) as failure:
        list(executor.map(divides_by_zero, [1]))
    message = str(failure.value)
    assert message.startswith("a Ray worker failed: ZeroDivisionError: division by zero (its log: ")
    assert "\n" not in message and "\x1b" not in message  # no remote traceback, no colour codes
    with pytest.raises(ValueError, match="^task 2 is malformed$"):  # our own errors come through as they are
        list(executor.map(refuses, [2]))
    executor.close()


def test_a_driver_stopped_by_sigterm_takes_its_local_ray_instance_with_it():
    import signal
    import subprocess
    import tempfile
    import time

    driver = textwrap.dedent(
        """
        import time
        from seal.executors import ExecutorSpec, make_executor
        executor = make_executor(ExecutorSpec(kind="ray", workers=1))
        print("started", flush=True)
        time.sleep(120)
        """
    )
    with tempfile.TemporaryDirectory(dir="/tmp") as temp:  # short: Ray's socket paths must fit 107 bytes
        env = {**os.environ, "RAY_TMPDIR": temp}  # this driver's Ray instance, apart from the tests' own
        process = subprocess.Popen([sys.executable, "-c", driver], env=env, stdout=subprocess.PIPE, text=True)
        assert process.stdout.readline().strip() == "started"
        assert ray_processes(temp)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 128 + signal.SIGTERM
        deadline = time.monotonic() + 30
        while ray_processes(temp) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not ray_processes(temp)


def ray_processes(temp_dir) -> list[str]:
    """Command lines of live processes that belong to the Ray instance under ``temp_dir``."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if str(temp_dir) in command and "python -c" not in command:
            found.append(command)
    return found
