"""The HTTP face of a :class:`~seal.serving.model.SelfAdaptingModel` (FastAPI): tenants, documents,
OpenAI-compatible chat completions (streamed or not), health, Prometheus metrics, and a web page.

Every request but ``/``, ``/healthz`` and ``/metrics`` carries ``Authorization: Bearer KEY``: the admin
key (``SEAL_ADMIN_KEY``) may create tenants; a tenant's key reaches that tenant's documents and
knowledge only (another tenant's document is a 404). Errors are JSON in OpenAI's shape,
``{"error": {"message", "type"}}``, with one clear message.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import threading
import time
import uuid
from contextlib import asynccontextmanager
from importlib.resources import files
from typing import Any, AsyncIterator, Literal

import torch
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException

from seal.serving.answers import Batcher, Chat, Reply
from seal.serving.config import DocumentError, DocumentTooLong, QueueFull
from seal.serving.model import SelfAdaptingModel
from seal.serving.state import STATUSES

log = logging.getLogger(__name__)
RETRY_SECONDS = 5


class ApiError(HTTPException):
    def __init__(self, status: int, message: str, kind: str = "invalid_request_error"):
        super().__init__(status, message)
        self.kind = kind


class DocumentIn(BaseModel):
    text: Any = None
    title: Any = None


class Message(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: str


class ChatIn(BaseModel):
    model_config = ConfigDict(extra="ignore")  # OpenAI clients send more (n, user, ...)
    messages: list[Message] = Field(min_length=1)
    model: str | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float = Field(default=0.0, ge=0, le=2)
    top_p: float = Field(default=1.0, gt=0, le=1)
    stream: bool = False


class Learner:
    """A thread learning queued documents one after another, and forming anew the knowledge of tenants
    who forgot one; :meth:`wake` it when there is something to do."""

    def __init__(self, model: SelfAdaptingModel, threads: int):
        self.model, self.threads = model, threads
        self._wake, self._stop = threading.Event(), threading.Event()
        self._thread = threading.Thread(target=self._run, name="seal-learner", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def alive(self) -> bool:
        return self._thread.is_alive()

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=600)

    def _run(self) -> None:
        torch.set_num_threads(self.threads)
        while not self._stop.is_set():
            try:
                self.model.refresh()
                learned = self.model.learn_next()
            except Exception:  # logged; the learner tries again after a pause, it never stops serving
                log.exception("the learner failed; trying again in %d s", RETRY_SECONDS)
                self._stop.wait(RETRY_SECONDS)
                continue
            if learned is None:
                self._wake.wait(timeout=1.0)
                self._wake.clear()


class Metrics:
    def __init__(self, model: SelfAdaptingModel, batcher_waiting: Any):
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "seal_requests", "HTTP requests", ["path", "status"], registry=self.registry
        )  # fmt: skip
        self.chat_seconds = Histogram(
            "seal_chat_seconds", "Chat completion latency (to the last token)", registry=self.registry,
            buckets=(0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64, 128),
        )  # fmt: skip
        self.tokens = Counter("seal_generated_tokens", "Tokens generated", registry=self.registry)
        documents = Gauge("seal_documents", "Documents by status", ["status"], registry=self.registry)
        for status in STATUSES:
            documents.labels(status).set_function(lambda s=status: dict(model.state.counts())[s])
        Gauge("seal_chats_waiting", "Chats waiting for a batch", registry=self.registry).set_function(batcher_waiting)
        damaged = Gauge("seal_damaged_files", "Knowledge files found damaged, not yet replaced", registry=self.registry)
        damaged.set_function(lambda: len(model.corrupt))


def create_app(model: SelfAdaptingModel, admin_key: str | None, max_body_bytes: int = 1 << 20) -> FastAPI:
    """The server's app around ``model``; its learner and answering threads run while the app does."""
    services: dict[str, Any] = {}

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        # answering has every core; the learner half of them, so that learning slows answers little
        threads = torch.get_num_threads()
        services["batcher"] = Batcher(model.answer, threads)
        services["learner"] = Learner(model, max(1, threads // 2))
        yield
        services["learner"].close()
        services["batcher"].close()

    app = FastAPI(title="seal serve", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.add_exception_handler(Exception, server_error)
    metrics = Metrics(model, lambda: services["batcher"].waiting() if "batcher" in services else 0)
    app.add_middleware(BodyLimit, limit=max_body_bytes)

    @app.middleware("http")
    async def count(request: Request, call_next: Any) -> Response:
        response = await call_next(request)
        route = request.scope.get("route")
        metrics.requests.labels(route.path if route else "unknown", str(response.status_code)).inc()
        return response

    @app.exception_handler(HTTPException)
    async def api_error(_: Request, error: HTTPException) -> JSONResponse:
        kind = getattr(error, "kind", "invalid_request_error")
        return JSONResponse({"error": {"message": error.detail, "type": kind}}, status_code=error.status_code)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, error: RequestValidationError) -> JSONResponse:
        first = error.errors()[0]
        where = ".".join(str(p) for p in first["loc"] if p != "body") or "body"
        message = f"{where}: {first['msg']}"
        return JSONResponse({"error": {"message": message, "type": "invalid_request_error"}}, status_code=400)

    def bearer(request: Request) -> str:
        header = request.headers.get("authorization", "")
        if not header.startswith("Bearer ") or not header[7:].strip():
            raise ApiError(401, "missing API key: send Authorization: Bearer KEY", "authentication_error")
        return header[7:].strip()

    def tenant(key: str = Depends(bearer)) -> str:
        found = model.state.tenant_of_key(key)
        if found is None:
            raise ApiError(401, "invalid API key", "authentication_error")
        return found

    def admin(key: str = Depends(bearer)) -> None:
        if admin_key and secrets.compare_digest(key.encode(), admin_key.encode()):
            return
        message = "creating tenants needs the admin key (SEAL_ADMIN_KEY)"
        if model.state.tenant_of_key(key) is not None:
            raise ApiError(403, message, "permission_error")
        raise ApiError(401, message, "authentication_error")

    def document_json(document: Any) -> dict[str, Any]:
        return {**document.public(), "progress": model.progress.get(document.id)}

    @app.get("/", response_class=HTMLResponse)
    def page() -> str:
        return files("seal.serving").joinpath("page.html").read_text()

    @app.get("/healthz")
    def health() -> JSONResponse:
        learning = services["learner"].alive()
        body = {"status": "ok" if learning else "the learner stopped", "model": model.config.model,
                "queued": dict(model.state.counts())["queued"], "damaged_files": len(model.corrupt)}  # fmt: skip
        return JSONResponse(body, status_code=200 if learning else 503)

    @app.get("/metrics")
    def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type="text/plain; version=0.0.4")

    @app.post("/v1/tenants", status_code=201, dependencies=[Depends(admin)])
    def create_tenant() -> dict[str, str]:
        tenant_id, key = model.state.create_tenant()
        return {"tenant": tenant_id, "api_key": key}

    @app.post("/v1/documents", status_code=202)
    def add_document(body: DocumentIn, owner: str = Depends(tenant)) -> dict[str, Any]:
        try:
            document = model.submit(body.text, body.title, owner)
        except DocumentError as error:
            raise ApiError(413 if isinstance(error, DocumentTooLong) else 400, str(error)) from error
        except QueueFull as error:
            raise ApiError(429, str(error), "rate_limit_error") from error
        services["learner"].wake()
        return {"id": document.id, "status": document.status}

    @app.get("/v1/documents")
    def list_documents(owner: str = Depends(tenant)) -> dict[str, Any]:
        return {"data": [document_json(d) for d in model.documents(owner)]}

    @app.get("/v1/documents/{document_id}")
    def get_document(document_id: str, owner: str = Depends(tenant)) -> dict[str, Any]:
        document = model.state.document(owner, document_id)
        if document is None:
            raise ApiError(404, f"no document {document_id}")
        return document_json(document)

    @app.delete("/v1/documents/{document_id}")
    def delete_document(document_id: str, owner: str = Depends(tenant)) -> dict[str, Any]:
        if not model.forget(document_id, owner, wait=False):
            raise ApiError(404, f"no document {document_id}")
        services["learner"].wake()
        return {"id": document_id, "deleted": True}

    @app.get("/v1/models")
    def models(_: str = Depends(tenant)) -> dict[str, Any]:
        return {"object": "list", "data": [{"id": model.config.model, "object": "model", "owned_by": "seal"}]}

    @app.post("/v1/chat/completions", response_model=None)
    async def chat(body: ChatIn, owner: str = Depends(tenant)) -> dict[str, Any] | StreamingResponse:
        messages = [m.model_dump() for m in body.messages]
        request = Chat(owner, messages, body.max_tokens or 256, body.temperature, body.top_p)
        try:
            model.check_chat(request)
        except ValueError as error:
            raise ApiError(400, str(error)) from error
        name, started = body.model or model.config.model, time.perf_counter()
        if not body.stream:
            reply = await asyncio.wrap_future(services["batcher"].submit(request))
            observe(reply, started)
            return completion(name, reply)
        return StreamingResponse(stream(request, name, started), media_type="text/event-stream")

    def observe(reply: Reply, started: float) -> None:
        metrics.chat_seconds.observe(time.perf_counter() - started)
        metrics.tokens.inc(reply.completion_tokens)

    async def stream(request: Chat, name: str, started: float) -> AsyncIterator[str]:
        loop, pieces = asyncio.get_running_loop(), asyncio.Queue()
        request.on_text = lambda text: loop.call_soon_threadsafe(pieces.put_nowait, text)
        future = services["batcher"].submit(request)
        future.add_done_callback(lambda _: loop.call_soon_threadsafe(pieces.put_nowait, None))
        identity = chunk_identity(name)
        yield event({**identity, "choices": [{"index": 0, "delta": {"role": "assistant"}, "finish_reason": None}]})
        while (piece := await pieces.get()) is not None:
            yield event({**identity, "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]})
        error = future.exception()
        if error is not None:
            yield event({"error": {"message": str(error), "type": "server_error"}})
        else:
            reply = future.result()
            observe(reply, started)
            yield event({**identity, "choices": [{"index": 0, "delta": {}, "finish_reason": reply.finish_reason}]})
        yield "data: [DONE]\n\n"

    return app


def completion(name: str, reply: Reply) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": name,
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": reply.text}, "finish_reason": reply.finish_reason}
        ],
        "usage": {
            "prompt_tokens": reply.prompt_tokens,
            "completion_tokens": reply.completion_tokens,
            "total_tokens": reply.prompt_tokens + reply.completion_tokens,
        },
    }


def chunk_identity(name: str) -> dict[str, Any]:
    return {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion.chunk", "created": int(time.time()),
            "model": name}  # fmt: skip


def event(payload: dict[str, Any]) -> str:
    return f"data: {json.dumps(payload)}\n\n"


class BodyLimit:
    """Refuses request bodies over ``limit`` bytes with 413, whether or not they announce their length."""

    def __init__(self, app: Any, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        announced = dict(scope.get("headers", [])).get(b"content-length")
        if announced is not None and announced.isdigit() and int(announced) > self.limit:
            await self._refuse(send)
            return
        received = 0

        async def limited() -> dict:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.limit:  # read while the route parses its body: answered by api_error
                raise ApiError(413, self._message())
            return message

        await self.app(scope, limited, send)

    def _message(self) -> str:
        return f"request body over {self.limit:,} bytes"

    async def _refuse(self, send: Any) -> None:
        body = json.dumps({"error": {"message": self._message(), "type": "invalid_request_error"}})
        await send({"type": "http.response.start", "status": 413, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": body.encode()})


async def server_error(_: Request, error: Exception) -> JSONResponse:
    """Anything unforeseen: logged with its traceback, answered in the same shape as every other error."""
    log.error("request failed", exc_info=error)
    message = f"internal error: {type(error).__name__}: {error}"
    return JSONResponse({"error": {"message": message, "type": "server_error"}}, status_code=500)
