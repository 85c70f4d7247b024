"""LLM-as-judge grader talking to an OpenAI-compatible chat-completions endpoint.

Before any model work, :meth:`JudgeGrader.check` sends one one-token request, so a wrong URL, model
or key stops the run at once with what to fix. While grading, transient failures are retried (the
server's ``Retry-After`` honoured); an answer the judge still cannot grade is ``UNGRADED``, never
``INCORRECT``; too many failed requests in a row, or a key that stops working, stop the run, keeping
what was written. Verdicts are cached on disk (:class:`VerdictCache`), so a resumed run re-grades
only what is ungraded and never pays twice for an answer.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import logging
import re
import sqlite3
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from pathlib import Path
from typing import Any

from seal.domain import RunStopped
from seal.grading.base import GradeRequest, Verdict

logger = logging.getLogger(__name__)

_MAX_WORKERS = 4
_FIRST_WORD = re.compile(r"\W*([A-Za-z]+)")

_SYSTEM_PROMPT = "You grade answers to quiz questions. You reply with a single word."
_USER_PROMPT = """\
Decide whether a model's answer to a question is correct.

Question: {question}
Reference answer: {gold}
Model's answer: {answer}

The model's answer is correct if it gives the same answer as the reference, in \
meaning rather than exact wording. Extra detail is acceptable as long as it does \
not contradict the reference. Reply only "yes" if the model's answer is correct \
or "no" if it is not."""


class JudgeError(RunStopped):
    """A judge fault that stops the run."""


class JudgeUnreachableError(JudgeError):
    """The judge endpoint could not be contacted at all."""


class JudgeRefusedError(JudgeError):
    """The endpoint answers, but refuses our requests (HTTP 401, 403, 404): a key, URL or model to fix."""


class JudgeFailingError(JudgeError):
    """Too many requests in a row failed."""


_REFUSALS = {
    401: "check the API key (OPENAI_API_KEY)",
    403: "check the API key's permissions (OPENAI_API_KEY)",
    404: "check --judge_url (an OpenAI-compatible base URL, e.g. https://api.openai.com/v1) and --judge_model",
}
MAX_RETRY_AFTER_S = 120.0


class _RetryableError(Exception):
    """A failure worth retrying: timeout, connection error, HTTP 429 or 5xx (``after``: the server's Retry-After)."""

    def __init__(self, message: str, after: float | None = None):
        super().__init__(message)
        self.after = after


class _FatalError(Exception):
    """A failure that retrying cannot fix, e.g. HTTP 401 or a malformed reply."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


class VerdictCache:
    """Verdicts on disk (SQLite), by judge URL, model, question, gold answer and answer; shared by the
    threads and processes of a machine."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.execute("CREATE TABLE IF NOT EXISTS verdicts (key TEXT PRIMARY KEY, verdict TEXT NOT NULL)")

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=30)

    @staticmethod
    def key(url: str, model: str, request: GradeRequest) -> str:
        parts = [url, model, request.question, request.gold, request.answer]
        return hashlib.sha256(json.dumps(parts).encode()).hexdigest()

    def get(self, key: str) -> Verdict | None:
        with closing(self._connect()) as db:
            row = db.execute("SELECT verdict FROM verdicts WHERE key = ?", (key,)).fetchone()
        return Verdict(row[0]) if row else None

    def put(self, key: str, verdict: Verdict) -> None:
        with closing(self._connect()) as db, db:
            db.execute("INSERT OR REPLACE INTO verdicts VALUES (?, ?)", (key, verdict.value))


def _seconds(retry_after: str | None) -> float | None:
    """A Retry-After header in seconds (its HTTP-date form is not used by the APIs we talk to)."""
    try:
        return max(0.0, float(retry_after)) if retry_after else None
    except ValueError:
        return None


def build_prompt(request: GradeRequest) -> str:
    """The user message that asks the judge to grade ``request``."""
    return _USER_PROMPT.format(question=request.question, gold=request.gold, answer=request.answer)


def parse_reply(text: str | None) -> Verdict:
    """Map the judge's reply to a verdict from its first word ("yes"/"no")."""
    match = _FIRST_WORD.match(text or "")
    word = match.group(1).lower() if match else ""
    return {"yes": Verdict.CORRECT, "no": Verdict.INCORRECT}.get(word, Verdict.UNGRADED)


class JudgeGrader:
    """Grades answers by asking a chat model "is this answer correct?".

    Each request times out after ``timeout_s``. Timeouts, connection errors and HTTP 429/5xx are
    retried ``max_retries`` times with exponential back-off (``backoff_s * 2**attempt`` seconds, or
    the server's ``Retry-After``, at most two minutes). A request that still fails, or whose reply
    says neither yes nor no, leaves its answer ``UNGRADED``; ``max_consecutive_failures`` failed
    requests in a row stop the run, and so does HTTP 401, 403 or 404 at any time. With a ``cache``,
    a verdict already given is not asked for again.
    """

    def __init__(
        self,
        url: str,
        model: str,
        api_key: str | None = None,
        timeout_s: float = 30.0,
        max_retries: int = 4,
        backoff_s: float = 1.0,
        max_consecutive_failures: int = 8,
        cache: VerdictCache | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.model = model
        self.api_key = api_key
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.max_consecutive_failures = max_consecutive_failures
        self.cache = cache
        self.name = f"judge:{model}"
        self._failures_in_a_row = 0
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:  # shipped to Ray workers: a lock does not pickle
        return {**self.__dict__, "_lock": None}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state, _lock=threading.Lock())

    def grade(self, requests: Sequence[GradeRequest]) -> list[Verdict]:
        """Grade with a small thread pool; verdicts come back in request order."""
        with ThreadPoolExecutor(max_workers=_MAX_WORKERS) as pool:
            return list(pool.map(self.grade_one, requests))

    def grade_one(self, request: GradeRequest) -> Verdict:
        """Grade a single request (from the cache if it was graded before); a failure yields ``UNGRADED``."""
        key = VerdictCache.key(self.url, self.model, request)
        cached = self.cache.get(key) if self.cache else None
        if cached is not None:
            return cached
        messages = [{"role": "system", "content": _SYSTEM_PROMPT}, {"role": "user", "content": build_prompt(request)}]
        try:
            verdict = parse_reply(self._complete({"model": self.model, "temperature": 0, "messages": messages}))
        except (_RetryableError, _FatalError) as exc:
            if getattr(exc, "status", None) in _REFUSALS:
                raise self._refused(exc) from exc
            self._failed(exc)
            return Verdict.UNGRADED
        with self._lock:
            self._failures_in_a_row = 0
        if self.cache and verdict is not Verdict.UNGRADED:
            self.cache.put(key, verdict)
        return verdict

    def _failed(self, exc: Exception) -> None:
        logger.warning("judge request failed, answer left ungraded: %s", exc)
        with self._lock:
            self._failures_in_a_row += 1
            if self._failures_in_a_row >= self.max_consecutive_failures:
                raise JudgeFailingError(
                    f"the judge at {self.url} failed {self._failures_in_a_row} requests in a row (last: {exc}); "
                    "what was graded is kept, and --resume re-grades the rest"
                )

    def _refused(self, exc: _FatalError) -> JudgeRefusedError:
        return JudgeRefusedError(f"the judge at {self.url} answered HTTP {exc.status}: {_REFUSALS[exc.status]}")

    def check(self) -> None:
        """Send one one-token request; raise :class:`JudgeUnreachableError` if the endpoint cannot be
        reached, :class:`JudgeRefusedError` if it refuses (key, URL or model wrong)."""
        payload = {"model": self.model, "max_tokens": 1, "messages": [{"role": "user", "content": "Say yes."}]}
        try:
            self._post(payload)
        except _FatalError as exc:
            if exc.status in _REFUSALS:
                raise self._refused(exc) from exc
        except _RetryableError as exc:
            raise JudgeUnreachableError(f"judge endpoint {self.url} is unreachable: {exc}") from exc

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        return headers

    def _complete(self, payload: dict[str, Any]) -> str | None:
        """The reply text, retrying transient failures with exponential back-off (or as the server asks)."""
        for attempt in range(self.max_retries):
            try:
                return self._reply_text(self._post(payload))
            except _RetryableError as exc:
                delay = min(MAX_RETRY_AFTER_S, exc.after) if exc.after is not None else self.backoff_s * 2**attempt
                logger.debug("judge request failed (%s), retrying in %.2fs", exc, delay)
                time.sleep(delay)
        return self._reply_text(self._post(payload))

    def _post(self, payload: dict[str, Any]) -> Any:
        request = urllib.request.Request(
            f"{self.url}/chat/completions",
            data=json.dumps(payload).encode("utf-8"),
            headers=self._headers(),
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                body = response.read()
        except urllib.error.HTTPError as exc:
            message = f"HTTP {exc.code} from {self.url}/chat/completions"
            if exc.code == 429 or exc.code >= 500:
                raise _RetryableError(message, _seconds(exc.headers.get("Retry-After"))) from exc
            raise _FatalError(message, exc.code) from exc
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
            reason = getattr(exc, "reason", None) or exc
            raise _RetryableError(f"{type(exc).__name__}: {reason}") from exc
        try:
            return json.loads(body)
        except ValueError as exc:
            raise _FatalError("reply is not JSON") from exc

    @staticmethod
    def _reply_text(reply: Any) -> str | None:
        try:
            content = reply["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError) as exc:
            raise _FatalError("reply has no choices[0].message.content") from exc
        if content is not None and not isinstance(content, str):
            raise _FatalError("reply content is not text")
        return content
