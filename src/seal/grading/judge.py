"""LLM-as-judge grader talking to an OpenAI-compatible chat-completions endpoint."""

from __future__ import annotations

import http.client
import json
import logging
import re
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

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


class JudgeUnreachableError(RuntimeError):
    """The judge endpoint could not be contacted at all."""


class _RetryableError(Exception):
    """A failure worth retrying: timeout, connection error, HTTP 429 or 5xx."""


class _FatalError(Exception):
    """A failure that retrying cannot fix, e.g. HTTP 401 or a malformed reply."""


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

    Timeouts, connection errors and HTTP 429/5xx are retried ``max_retries``
    times with exponential back-off (``backoff_s * 2**attempt`` seconds).  A
    request that still fails, or fails with another HTTP error, is logged and
    marked ``UNGRADED``; failures are never turned into ``INCORRECT``.
    """

    def __init__(
        self,
        url: str,
        model: str,
        api_key: str | None = None,
        timeout_s: float = 30.0,
        max_retries: int = 4,
        backoff_s: float = 1.0,
    ) -> None:
        self.url = url.rstrip("/")
        self.model = model
        self.api_key = api_key
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.name = f"judge:{model}"

    def grade(self, requests: Sequence[GradeRequest]) -> list[Verdict]:
        """Grade with a small thread pool; verdicts come back in request order."""
        with ThreadPoolExecutor(max_workers=_MAX_WORKERS) as pool:
            return list(pool.map(self.grade_one, requests))

    def grade_one(self, request: GradeRequest) -> Verdict:
        """Grade a single request; any failure yields ``UNGRADED`` and a warning."""
        payload = {
            "model": self.model,
            "temperature": 0,
            "messages": [
                {"role": "system", "content": _SYSTEM_PROMPT},
                {"role": "user", "content": build_prompt(request)},
            ],
        }
        try:
            return parse_reply(self._complete(payload))
        except _RetryableError as exc:
            logger.warning(
                "judge request failed after %d attempts, answer left ungraded: %s",
                self.max_retries + 1,
                exc,
            )
        except _FatalError as exc:
            logger.warning("judge request failed, answer left ungraded: %s", exc)
        return Verdict.UNGRADED

    def check_reachable(self) -> None:
        """Raise ``JudgeUnreachableError`` if the endpoint cannot be contacted.

        Sends one tiny ``GET {url}/models``; any HTTP response, even an error
        status, proves the server is there.
        """
        request = urllib.request.Request(f"{self.url}/models", headers=self._headers())
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s):
                pass
        except urllib.error.HTTPError:
            return
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
            reason = getattr(exc, "reason", None) or exc
            raise JudgeUnreachableError(f"judge endpoint {self.url} is unreachable: {reason}") from exc

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        return headers

    def _complete(self, payload: dict[str, Any]) -> str | None:
        """The reply text, retrying transient failures with exponential back-off."""
        for attempt in range(self.max_retries):
            try:
                return self._reply_text(self._post(payload))
            except _RetryableError as exc:
                delay = self.backoff_s * 2**attempt
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
                raise _RetryableError(message) from exc
            raise _FatalError(message) from exc
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
            raise _RetryableError(f"{type(exc).__name__}: {exc}") from exc
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
