"""Tests for seal.grading: offline rules, the LLM judge client and calibration."""

from __future__ import annotations

import json
import logging
import math
import socket
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from seal.grading import (
    CalibrationStats,
    Grader,
    GradeRequest,
    JudgeGrader,
    JudgeUnreachableError,
    OfflineGrader,
    Verdict,
    VerdictCache,
    calibrate,
    load_graded,
)
from seal.grading.judge import JudgeFailingError, JudgeRefusedError, parse_reply
from tests.fake_judge import FakeJudgeServer, Responder, chat_reply

REFERENCE_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "seal-reference" / "graded"


# --------------------------------------------------------------------------- offline grader


def _offline(question: str, gold: str, answer: str) -> Verdict:
    return OfflineGrader().grade([GradeRequest(question, gold, answer)])[0]


@pytest.mark.parametrize(
    ("question", "gold", "answer"),
    [
        ("What is the capital of France?", "Paris", "Paris"),
        ("What is the capital of France?", "Paris", "The capital of France is Paris."),
        ("Which band recorded Abbey Road?", "The Beatles", "beatles!"),
        ("Which town did he order to be massacred?", "Otrar", "The town's massacre he ordered was OTRAR."),
        ("Who was the third son?", "Ögedei Khan", "The third son was Ogedei Khan."),
        ("How many schools are there?", "eleven", "There are 11 schools."),
        ("How many teams did he take to the final?", "2", "He took two different teams."),
        ("When was the border drawn?", "19th century", "It was drawn in the nineteenth century."),
        ("How many people lived there?", "1,000,000", "About 1000000 people lived there."),
        ("When was it discovered?", "the 1970s", "1977"),
        ("Who did not concur?", "Leonhard Euler", "Euler"),
        ("Who composed the music?", "Murray Gold and Ben Foster", "Ben Foster and Murray Gold."),
        ("What property shows it?", "diverges", "The divergence of the series shows it."),
        ("What innovation is credited to him?", "traditional Mongolian script", "The Mongolian script"),
        ("Name one type of test.", 'probabilistic (or "Monte Carlo")', "A Monte Carlo test."),
        ("Was the launch a failure or a success?", "success", "It was a success."),
        ("What did the Shah do when defeated?", "fled", "The Shah fled to the safety of his capital."),
    ],
)
def test_offline_accepts_correct_answers(question: str, gold: str, answer: str) -> None:
    assert _offline(question, gold, answer) is Verdict.CORRECT


@pytest.mark.parametrize(
    ("question", "gold", "answer"),
    [
        ("What is the capital of France?", "Paris", "Lyon"),
        ("What is the capital of France?", "Paris", ""),
        ("Which town was massacred?", "Otrar", "The town of Bukhara was massacred."),
        ("Who was charged with the pursuit?", "Subutai and Jebe", "His trusted general, Subutai."),
        ("How many adherents are there?", "80 million", "There are 12 million adherents."),
        ("How many schools are there?", "eleven", "There are 17 schools."),
        ("When was the border drawn?", "6th century", "In the 8th century."),
        ("Was the launch a failure or a success?", "success", "It was a failure."),
        ("Where did he flee?", "Normandy", "Rouen.\n\nQ: Where is Normandy?\nAnswer: France"),
        ("What do cells generate?", "generate ATP energy", "Cells make proteins."),
    ],
)
def test_offline_rejects_wrong_answers(question: str, gold: str, answer: str) -> None:
    assert _offline(question, gold, answer) is Verdict.INCORRECT


def test_offline_grader_keeps_order_and_satisfies_protocol() -> None:
    grader = OfflineGrader()
    requests = [
        GradeRequest("Q?", "Paris", "Paris"),
        GradeRequest("Q?", "Paris", "Rome"),
        GradeRequest("Q?", "Rome", "Rome"),
    ]
    assert isinstance(grader, Grader)
    assert grader.grade(requests) == [Verdict.CORRECT, Verdict.INCORRECT, Verdict.CORRECT]
    assert grader.grade([]) == []


# --------------------------------------------------------------------------- calibration


class _FixedGrader:
    name = "fixed"

    def __init__(self, verdicts: Sequence[Verdict]) -> None:
        self.verdicts = list(verdicts)

    def grade(self, requests: Sequence[GradeRequest]) -> list[Verdict]:
        assert len(requests) == len(self.verdicts)
        return list(self.verdicts)


def _labelled(labels: Sequence[bool]) -> list[tuple[GradeRequest, bool]]:
    return [(GradeRequest(f"q{i}", "gold", "answer"), label) for i, label in enumerate(labels)]


def test_calibration_matches_hand_computed_table() -> None:
    c, i = Verdict.CORRECT, Verdict.INCORRECT
    # grader/reference: 4 x (C, True), 1 x (C, False), 2 x (I, True), 3 x (I, False)
    verdicts = [c, c, c, c, c, i, i, i, i, i]
    labels = [True, True, True, True, False, True, True, False, False, False]
    stats = calibrate(_FixedGrader(verdicts), _labelled(labels))
    assert (stats.tp, stats.fp, stats.fn, stats.tn, stats.n) == (4, 1, 2, 3, 10)
    assert stats.agreement == pytest.approx(0.7)
    # chance agreement = 0.5 * 0.6 + 0.5 * 0.4 = 0.5, kappa = (0.7 - 0.5) / (1 - 0.5)
    assert stats.kappa == pytest.approx(0.4)
    assert stats.precision == pytest.approx(0.8)
    assert stats.recall == pytest.approx(4 / 6)


def test_calibration_perfect_agreement_and_ungraded_excluded() -> None:
    c, i, u = Verdict.CORRECT, Verdict.INCORRECT, Verdict.UNGRADED
    stats = calibrate(_FixedGrader([c, c, i, u, u]), _labelled([True, True, False, False, True]))
    assert stats == CalibrationStats(
        n=3, agreement=1.0, kappa=1.0, precision=1.0, recall=1.0, tp=2, fp=0, fn=0, tn=1, ungraded=2
    )


def test_calibration_degenerate_cases_are_nan() -> None:
    no_positives = calibrate(_FixedGrader([Verdict.INCORRECT] * 3), _labelled([False] * 3))
    assert no_positives.agreement == 1.0
    assert math.isnan(no_positives.precision)
    assert math.isnan(no_positives.recall)
    assert math.isnan(no_positives.kappa)

    empty = calibrate(_FixedGrader([]), [])
    assert empty.n == 0
    assert all(math.isnan(x) for x in (empty.agreement, empty.kappa, empty.precision, empty.recall))


def _one_question(question: Any) -> dict[str, Any]:
    return {"articles": [{"completions": [{"questions": [question]}]}]}


def _write(tmp_path: Path, data: Any) -> Path:
    path = tmp_path / "graded.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def test_load_graded_pairs_and_skips(tmp_path: Path) -> None:
    questions = [
        {
            "question": "Q1?",
            "answer": "gold1",
            "baseline_answer": "b1",
            "baseline_correct": False,
            "adapter_answer": "a1",
            "adapter_correct": True,
        },
        {
            "question": "Q2?",
            "answer": "gold2",
            "baseline_answer": "b2",
            "baseline_correct": True,
            "adapter_answer": None,
            "adapter_correct": None,
        },
        {"question": "Q3?", "answer": "gold3", "baseline_answer": "b3"},
    ]
    path = _write(tmp_path, {"articles": [{"title": "T", "completions": [{"questions": questions}]}]})
    assert load_graded(path) == [
        (GradeRequest("Q1?", "gold1", "b1"), False),
        (GradeRequest("Q1?", "gold1", "a1"), True),
        (GradeRequest("Q2?", "gold2", "b2"), True),
    ]


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        ([], "top level is not an object"),
        ({"runs": []}, "no list 'articles'"),
        ({"articles": [{"title": "T"}]}, "articles[0] has no list 'completions'"),
        (_one_question("x"), "questions[0] is not an object"),
        (_one_question({"question": "Q"}), "no string 'answer'"),
        (
            _one_question({"question": "Q", "answer": "g", "adapter_answer": "a", "adapter_correct": "yes"}),
            "'adapter_correct' a boolean",
        ),
    ],
)
def test_load_graded_schema_errors(tmp_path: Path, data: Any, fragment: str) -> None:
    path = _write(tmp_path, data)
    with pytest.raises(ValueError) as excinfo:
        load_graded(path)
    message = str(excinfo.value)
    assert str(path) in message and fragment in message and "\n" not in message


def test_load_graded_invalid_json(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text("{not json", encoding="utf-8")
    with pytest.raises(ValueError, match=r"broken\.json: not valid JSON"):
        load_graded(path)


# Agreement of OfflineGrader with GPT-4.1 verdicts as measured when the rules were
# written (tuned on base.json, naive.json held out): base 0.896, naive 0.901.
@pytest.mark.parametrize(("name", "min_agreement"), [("base", 0.89), ("naive", 0.895)])
def test_offline_agreement_on_reference_files(name: str, min_agreement: float) -> None:
    path = REFERENCE_DIR / f"{name}.json"
    if not path.exists():
        pytest.skip(f"reference file {path} not available")
    labelled = load_graded(path)
    stats = calibrate(OfflineGrader(), labelled)
    assert stats.n == len(labelled) > 1000
    assert stats.agreement >= min_agreement
    assert stats.kappa >= 0.75


# --------------------------------------------------------------------------- judge grader


def _prompt(body: dict[str, Any]) -> str:
    return str(body["messages"][-1]["content"])


def _judge(url: str, **kwargs: Any) -> JudgeGrader:
    return JudgeGrader(url, "judge-model", **{"backoff_s": 0.01, "timeout_s": 5.0, **kwargs})


PARIS = GradeRequest("What is the capital of France?", "Paris", "Paris is the capital of France.")
LYON = GradeRequest("What is the capital of France?", "Paris", "Lyon is the capital of France.")


def test_judge_answers_from_request_content(fake_judge: Callable[[Responder], FakeJudgeServer]) -> None:
    server = fake_judge(lambda body: chat_reply("Yes." if "Paris is the capital" in _prompt(body) else "no"))
    grader = _judge(server.url)
    assert grader.grade([PARIS, LYON]) == [Verdict.CORRECT, Verdict.INCORRECT]

    assert len(server.calls) == 2
    for path, headers, body in server.calls:
        assert path == "/v1/chat/completions"
        assert "Authorization" not in headers
        assert body["model"] == "judge-model"
        assert body["temperature"] == 0
        prompt = _prompt(body)
        assert PARIS.question in prompt and PARIS.gold in prompt
        assert '"yes"' in prompt and '"no"' in prompt
    prompts = [_prompt(body) for _, _, body in server.calls]
    assert sorted(PARIS.answer in p for p in prompts) == [False, True]
    assert sorted(LYON.answer in p for p in prompts) == [False, True]


def test_judge_keeps_request_order(fake_judge: Callable[[Responder], FakeJudgeServer]) -> None:
    def respond(body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        number = int(_prompt(body).split("answer number ")[1].split(".")[0])
        time.sleep(0.02 * (number % 3))
        return chat_reply("yes" if number % 2 == 0 else "No, it is wrong.")

    server = fake_judge(respond)
    requests = [GradeRequest("Q?", "gold", f"answer number {n}.") for n in range(10)]
    verdicts = _judge(server.url).grade(requests)
    assert verdicts == [Verdict.CORRECT if n % 2 == 0 else Verdict.INCORRECT for n in range(10)]


def test_judge_retries_server_errors(fake_judge: Callable[[Responder], FakeJudgeServer]) -> None:
    attempts: list[int] = []

    def flaky(body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        attempts.append(1)
        if len(attempts) <= 2:
            return 500, {"error": {"message": "overloaded"}}
        return chat_reply("yes")

    server = fake_judge(flaky)
    assert _judge(server.url, max_retries=4).grade([PARIS]) == [Verdict.CORRECT]
    assert len(server.calls) == 3


def test_judge_retries_rate_limits(fake_judge: Callable[[Responder], FakeJudgeServer]) -> None:
    attempts: list[int] = []

    def limited(body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        attempts.append(1)
        return (429, {"error": {"message": "slow down"}}) if len(attempts) == 1 else chat_reply("no")

    server = fake_judge(limited)
    assert _judge(server.url).grade([LYON]) == [Verdict.INCORRECT]
    assert len(server.calls) == 2


def test_judge_gives_up_as_ungraded(
    fake_judge: Callable[[Responder], FakeJudgeServer], caplog: pytest.LogCaptureFixture
) -> None:
    server = fake_judge(lambda body: (500, {"error": {"message": "down"}}))
    with caplog.at_level(logging.WARNING, logger="seal.grading.judge"):
        assert _judge(server.url, max_retries=2).grade([PARIS]) == [Verdict.UNGRADED]
    assert len(server.calls) == 3
    assert "ungraded" in caplog.text and "HTTP 500" in caplog.text


def test_judge_does_not_retry_client_errors(fake_judge: Callable[[Responder], FakeJudgeServer]) -> None:
    server = fake_judge(lambda body: (400, {"error": {"message": "context too long"}}))
    assert _judge(server.url, max_retries=3).grade([PARIS]) == [Verdict.UNGRADED]
    assert len(server.calls) == 1


def test_judge_unparseable_reply_is_ungraded(fake_judge: Callable[[Responder], FakeJudgeServer]) -> None:
    server = fake_judge(lambda body: chat_reply("Maybe, it depends."))
    assert _judge(server.url).grade([PARIS]) == [Verdict.UNGRADED]
    assert len(server.calls) == 1


def test_judge_sends_api_key_and_accepts_trailing_slash(
    fake_judge: Callable[[Responder], FakeJudgeServer],
) -> None:
    server = fake_judge(lambda body: chat_reply("yes"))
    grader = _judge(server.url + "/", api_key="sk-test-123")
    assert grader.grade([PARIS]) == [Verdict.CORRECT]
    path, headers, _ = server.calls[0]
    assert path == "/v1/chat/completions"
    assert headers["Authorization"] == "Bearer sk-test-123"


def test_check_sends_one_token_request_and_names_what_to_fix(
    fake_judge: Callable[[Responder], FakeJudgeServer],
) -> None:
    server = fake_judge(lambda body: chat_reply("yes"))
    _judge(server.url).check()
    ((path, _, body),) = server.calls
    assert path == "/v1/chat/completions" and body["max_tokens"] == 1 and body["model"] == "judge-model"

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{closed_port}/v1"
    with pytest.raises(JudgeUnreachableError, match=f"judge endpoint {url} is unreachable: "):
        _judge(url).check()
    for status, fix in (
        (401, "check the API key"),
        (403, "check the API key.s permissions"),
        (404, "check --judge_url"),
    ):
        refusing = fake_judge(lambda body, status=status: (status, {"error": {"message": "no"}}))
        with pytest.raises(JudgeRefusedError, match=f"answered HTTP {status}: {fix}"):
            _judge(refusing.url).check()


def test_a_key_refused_while_grading_stops_the_run(fake_judge: Callable[[Responder], FakeJudgeServer]) -> None:
    server = fake_judge(lambda body: (401, {"error": {"message": "key revoked"}}))
    with pytest.raises(JudgeRefusedError, match="HTTP 401"):
        _judge(server.url).grade([PARIS])


def test_consecutive_failures_stop_the_run_and_a_success_resets_the_count(
    fake_judge: Callable[[Responder], FakeJudgeServer],
) -> None:
    replies = iter([(500, {})] * 2 + [chat_reply("yes")] + [(500, {})] * 3)
    server = fake_judge(lambda body: next(replies))
    judge = _judge(server.url, max_retries=0, max_consecutive_failures=3)
    assert [judge.grade_one(PARIS) for _ in range(3)] == [Verdict.UNGRADED, Verdict.UNGRADED, Verdict.CORRECT]
    assert judge.grade_one(PARIS) is Verdict.UNGRADED and judge.grade_one(PARIS) is Verdict.UNGRADED
    with pytest.raises(JudgeFailingError, match="failed 3 requests in a row .*--resume re-grades"):
        judge.grade_one(PARIS)


def test_a_hanging_judge_times_out_and_stops_the_run(fake_judge: Callable[[Responder], FakeJudgeServer]) -> None:
    def hangs(body):
        time.sleep(1.0)
        return chat_reply("yes")

    server = fake_judge(hangs)
    judge = _judge(server.url, timeout_s=0.2, max_retries=0, max_consecutive_failures=2)
    started = time.perf_counter()
    with pytest.raises(JudgeFailingError, match="timed out"):
        judge.grade([PARIS, LYON, PARIS, LYON])
    assert time.perf_counter() - started < 5


def test_retry_after_is_honoured(fake_judge: Callable[[Responder], FakeJudgeServer]) -> None:
    replies = iter([(429, {"error": {"message": "slow down"}}, {"Retry-After": "0.5"}), chat_reply("yes")])
    server = fake_judge(lambda body: next(replies))
    started = time.perf_counter()
    assert _judge(server.url, backoff_s=0.01).grade_one(PARIS) is Verdict.CORRECT
    assert time.perf_counter() - started >= 0.5


def test_cached_verdicts_are_not_asked_again(
    tmp_path: Path, fake_judge: Callable[[Responder], FakeJudgeServer]
) -> None:
    server = fake_judge(lambda body: chat_reply("yes" if "Paris is" in _prompt(body) else "Hmm."))
    cache = VerdictCache(tmp_path / "verdicts.sqlite")
    assert _judge(server.url, cache=cache).grade([PARIS, LYON]) == [Verdict.CORRECT, Verdict.UNGRADED]
    again = _judge(server.url, cache=VerdictCache(tmp_path / "verdicts.sqlite"))  # another process, same file
    assert again.grade([PARIS, LYON]) == [Verdict.CORRECT, Verdict.UNGRADED]
    asked = [PARIS.answer in _prompt(body) for _, _, body in server.calls]
    assert asked.count(True) == 1 and asked.count(False) == 2  # the ungraded one is asked again, the verdict not


@pytest.mark.parametrize(
    ("reply", "verdict"),
    [
        ("yes", Verdict.CORRECT),
        ("Yes.", Verdict.CORRECT),
        ("**YES** - it matches", Verdict.CORRECT),
        (" no", Verdict.INCORRECT),
        ("No, the answer names another town.", Verdict.INCORRECT),
        ("Yesterday", Verdict.UNGRADED),
        ("The answer is correct", Verdict.UNGRADED),
        ("", Verdict.UNGRADED),
        (None, Verdict.UNGRADED),
    ],
)
def test_parse_reply(reply: str | None, verdict: Verdict) -> None:
    assert parse_reply(reply) is verdict
