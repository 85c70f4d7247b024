"""`seal serve` over HTTP: keys and tenants, documents, chat completions (OpenAI's shape, streamed or
not), limits and errors, metrics; then a real server process: the openai client, and kill -9."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from seal.serving import app
from seal.serving.app import create_app
from seal.serving.model import SelfAdaptingModel
from tests.test_serving import TINY, TREATY, ZOBERRA

ADMIN = "admin-key-for-tests-0123456789"


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    model = SelfAdaptingModel(TINY, tmp_path_factory.mktemp("state"))
    with TestClient(create_app(model, ADMIN, max_body_bytes=64_000)) as client:
        yield client, model


def new_tenant(client) -> dict:
    response = client.post("/v1/tenants", headers={"Authorization": f"Bearer {ADMIN}"})
    assert response.status_code == 201
    return {"Authorization": f"Bearer {response.json()['api_key']}"}


def wait_learned(client, headers, document_id, seconds=120):
    deadline = time.time() + seconds
    while time.time() < deadline:
        document = client.get(f"/v1/documents/{document_id}", headers=headers).json()
        if document["status"] in ("learned", "failed"):
            return document
        time.sleep(0.1)
    raise AssertionError(f"{document_id} not learned within {seconds} s")


def error_of(response) -> str:
    return response.json()["error"]["message"]


def test_tenants_need_the_admin_key_and_keys_are_stored_hashed(served):
    client, model = served
    assert client.post("/v1/tenants").status_code == 401
    assert client.post("/v1/tenants", headers={"Authorization": "Bearer wrong"}).status_code == 401
    response = client.post("/v1/tenants", headers={"Authorization": f"Bearer {ADMIN}"})
    key = response.json()["api_key"]
    assert response.status_code == 201 and key.startswith("seal-")
    assert key.encode() not in (model.directory / "state.sqlite").read_bytes()
    assert model.state.tenant_of_key(key) == response.json()["tenant"]
    assert client.post("/v1/tenants", headers={"Authorization": f"Bearer {key}"}).status_code == 403


def test_every_tenant_route_needs_a_valid_key(served):
    client, _ = served
    routes = [("GET", "/v1/documents"), ("POST", "/v1/documents"), ("GET", "/v1/documents/x"),
              ("DELETE", "/v1/documents/x"), ("POST", "/v1/chat/completions"), ("GET", "/v1/models")]  # fmt: skip
    for method, path in routes:
        for headers in ({}, {"Authorization": "Bearer seal-not-a-key"}):
            response = client.request(method, path, headers=headers, json={})
            assert response.status_code == 401, (method, path)
            assert "API key" in error_of(response)


def test_a_document_is_queued_learned_and_shown_with_its_self_edit(served):
    client, _ = served
    headers = new_tenant(client)
    response = client.post("/v1/documents", headers=headers, json={"text": ZOBERRA, "title": "Zoberra cake"})
    assert response.status_code == 202 and response.json()["status"] == "queued"
    document = wait_learned(client, headers, response.json()["id"])
    assert document["status"] == "learned" and document["self_edit"] and document["title"] == "Zoberra cake"
    listed = client.get("/v1/documents", headers=headers).json()["data"]
    assert [d["id"] for d in listed] == [document["id"]]


def test_one_tenant_cannot_reach_another_tenants_documents_or_knowledge(served):
    client, _ = served
    alice, bob = new_tenant(client), new_tenant(client)
    question = {"messages": [{"role": "user", "content": "Where is Zoberra cake from?"}], "max_tokens": 8}
    bob_before = client.post("/v1/chat/completions", headers=bob, json=question).json()
    document = client.post("/v1/documents", headers=alice, json={"text": ZOBERRA}).json()
    wait_learned(client, alice, document["id"])
    assert client.get(f"/v1/documents/{document['id']}", headers=bob).status_code == 404
    assert client.delete(f"/v1/documents/{document['id']}", headers=bob).status_code == 404
    assert client.get("/v1/documents", headers=bob).json()["data"] == []
    bob_after = client.post("/v1/chat/completions", headers=bob, json=question).json()
    alice_answer = client.post("/v1/chat/completions", headers=alice, json=question).json()
    content = [r["choices"][0]["message"]["content"] for r in (bob_before, bob_after, alice_answer)]
    assert content[0] == content[1] != content[2]


def test_forgetting_a_document_takes_it_out_of_the_answers(served):
    client, _ = served
    headers = new_tenant(client)
    question = {"messages": [{"role": "user", "content": "Where is Zoberra cake from?"}], "max_tokens": 8}
    blank = client.post("/v1/chat/completions", headers=headers, json=question).json()["choices"][0]["message"]
    document = client.post("/v1/documents", headers=headers, json={"text": ZOBERRA}).json()
    wait_learned(client, headers, document["id"])
    taught = client.post("/v1/chat/completions", headers=headers, json=question).json()["choices"][0]["message"]
    response = client.delete(f"/v1/documents/{document['id']}", headers=headers)
    assert response.status_code == 200 and response.json() == {"id": document["id"], "deleted": True}
    forgotten = client.post("/v1/chat/completions", headers=headers, json=question).json()["choices"][0]["message"]
    assert taught != blank and forgotten == blank
    assert client.get(f"/v1/documents/{document['id']}", headers=headers).status_code == 404


def test_bad_documents_and_bodies_get_a_clear_error(served):
    client, model = served
    headers = new_tenant(client)
    cases = [
        ({"text": "   "}, 400, "the document is empty"),
        ({"text": "ab\x00cd"}, 400, "looks binary"),
        ({"text": 12}, 400, "must be a string"),
        ({"title": "no text"}, 400, "must be a string"),
        ({"text": "x" * 20_001}, 413, "20,001 characters; at most 20,000"),
        ({"text": "x" * 70_000}, 413, "request body over 64,000 bytes"),
    ]
    for body, status, message in cases:
        response = client.post("/v1/documents", headers=headers, json=body)
        assert (response.status_code, message in error_of(response)) == (status, True), (body, response.text)
    as_json = {**headers, "Content-Type": "application/json"}
    response = client.post("/v1/documents", headers=as_json, content=b"{nope")
    assert response.status_code == 400 and "JSON" in error_of(response)
    unannounced = iter([b'{"text": "', b"x" * 70_000, b'"}'])  # sent in chunks, no Content-Length
    response = client.post("/v1/documents", headers=as_json, content=unannounced)
    assert response.status_code == 413 and "request body over 64,000 bytes" in error_of(response)
    chats = [({"messages": []}, "messages"), ({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 0},
             "max_tokens"), ({"messages": [{"role": "wizard", "content": "hi"}]}, "role")]  # fmt: skip
    for body, field in chats:
        response = client.post("/v1/chat/completions", headers=headers, json=body)
        assert response.status_code == 400 and field in error_of(response)
    too_long = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 100_000}
    response = client.post("/v1/chat/completions", headers=headers, json=too_long)
    assert response.status_code == 400 and "exceeds the model's context" in error_of(response)


def test_queued_documents_are_bounded_per_tenant(served, monkeypatch):
    client, model = served
    headers = new_tenant(client)
    monkeypatch.setattr(model, "learn_next", lambda: None)  # nothing is learned meanwhile
    for _ in range(TINY.max_queued):
        assert client.post("/v1/documents", headers=headers, json={"text": TREATY}).status_code == 202
    response = client.post("/v1/documents", headers=headers, json={"text": TREATY})
    assert response.status_code == 429 and "already waiting" in error_of(response)
    other = new_tenant(client)
    assert client.post("/v1/documents", headers=other, json={"text": TREATY}).status_code == 202
    monkeypatch.undo()


def test_an_unforeseen_failure_is_a_json_error_and_the_learner_carries_on(served, monkeypatch):
    client, model = served
    headers = new_tenant(client)
    monkeypatch.setattr(model, "documents", lambda tenant: 1 / 0)
    response = TestClient(client.app, raise_server_exceptions=False).get("/v1/documents", headers=headers)
    assert response.status_code == 500 and error_of(response) == "internal error: ZeroDivisionError: division by zero"
    monkeypatch.undo()
    monkeypatch.setattr(app, "RETRY_SECONDS", 0.1)
    learn_next, failures = model.learn_next, []

    def fail_once():
        if not failures:
            failures.append(1)
            raise OSError("disk full")
        return learn_next()

    monkeypatch.setattr(model, "learn_next", fail_once)
    document = client.post("/v1/documents", headers=headers, json={"text": TREATY}).json()
    assert wait_learned(client, headers, document["id"])["status"] == "learned" and failures == [1]
    assert client.get("/healthz").json()["status"] == "ok"


def test_chat_completions_in_openai_shape_streamed_or_not(served):
    client, _ = served
    headers = new_tenant(client)
    body = {"model": "anything", "messages": [{"role": "user", "content": "Tell me a story"}], "max_tokens": 12}
    whole = client.post("/v1/chat/completions", headers=headers, json=body).json()
    assert whole["object"] == "chat.completion" and whole["model"] == "anything"
    assert whole["choices"][0]["finish_reason"] == "length"
    assert whole["usage"]["completion_tokens"] == 12 and whole["usage"]["prompt_tokens"] > 5
    with client.stream("POST", "/v1/chat/completions", headers=headers, json={**body, "stream": True}) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        events = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant"}
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    streamed = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert streamed == whole["choices"][0]["message"]["content"] and len(chunks) > 3


def test_health_metrics_and_the_page(served):
    client, _ = served
    assert client.get("/healthz").json()["status"] == "ok"
    metrics = client.get("/metrics").text
    assert 'seal_documents{status="learned"}' in metrics and "seal_requests_total" in metrics
    assert "seal_chat_seconds_bucket" in metrics
    page = client.get("/")
    assert page.status_code == 200 and "<h1>seal serve" in page.text


# a real server process


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(state: Path, port: int) -> subprocess.Popen:
    command = [
        str(Path(sys.executable).with_name("seal")), "serve", "--model", "tiny-random", "--state", str(state),
        "--port", str(port), "--lora.rank", "4", "--lora.alpha", "8", "--lora.base_precision", "fp32",
        "--train.learning_rate", "0.05", "--train.epochs", "40", "--sampling.max_new_tokens", "12",
        "--slots", "2",
    ]  # fmt: skip
    env = {**os.environ, "SEAL_ADMIN_KEY": ADMIN, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return process
        except httpx.HTTPError:
            time.sleep(0.1)
        assert process.poll() is None, process.stderr.read().decode()[-2000:]
    process.kill()
    raise AssertionError("the server did not start")


def test_the_openai_client_talks_to_a_real_server(tmp_path):
    openai = pytest.importorskip("openai")
    port = free_port()
    server = start_server(tmp_path / "state", port)
    try:
        key = httpx.post(f"http://127.0.0.1:{port}/v1/tenants", headers={"Authorization": f"Bearer {ADMIN}"})
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=key.json()["api_key"], timeout=60)
        messages = [{"role": "user", "content": "Tell me a story"}]
        whole = client.chat.completions.create(model="tiny-random", messages=messages, max_tokens=10)
        stream = client.chat.completions.create(model="tiny-random", messages=messages, max_tokens=10, stream=True)
        streamed = "".join(chunk.choices[0].delta.content or "" for chunk in stream)
        assert whole.choices[0].message.content == streamed and whole.usage.completion_tokens == 10
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="seal-wrong").models.list()
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_kill_9_loses_no_accepted_document_and_serves_the_last_committed_knowledge(tmp_path):
    port, state = free_port(), tmp_path / "state"
    server = start_server(state, port)
    url = f"http://127.0.0.1:{port}"
    key = httpx.post(f"{url}/v1/tenants", headers={"Authorization": f"Bearer {ADMIN}"}).json()["api_key"]
    headers = {"Authorization": f"Bearer {key}"}
    ids = [httpx.post(f"{url}/v1/documents", headers=headers, json={"text": t}).json()["id"]
           for t in (ZOBERRA, TREATY, ZOBERRA + " It is cut into seven wedges.")]  # fmt: skip
    deadline = time.time() + 120
    while httpx.get(f"{url}/v1/documents/{ids[0]}", headers=headers).json()["status"] != "learned":
        assert time.time() < deadline
        time.sleep(0.05)
    while httpx.get(f"{url}/v1/documents/{ids[1]}", headers=headers).json()["status"] != "learning":
        assert time.time() < deadline
        time.sleep(0.01)
    question = {"messages": [{"role": "user", "content": "Where is Zoberra cake from?"}], "max_tokens": 8}
    committed = httpx.post(f"{url}/v1/chat/completions", headers=headers, json=question, timeout=60).json()
    server.send_signal(signal.SIGKILL)  # in the middle of learning the second document
    server.wait()

    server = start_server(state, port)
    try:
        listed = httpx.get(f"{url}/v1/documents", headers=headers).json()["data"]
        assert [d["id"] for d in listed] == ids  # every accepted document is still there
        assert listed[0]["status"] == "learned" and {d["status"] for d in listed[1:]} <= {"queued", "learning"}
        again = httpx.post(f"{url}/v1/chat/completions", headers=headers, json=question, timeout=60).json()
        assert again["choices"] == committed["choices"]  # the last committed knowledge, as it was
        deadline = time.time() + 180
        while {d["status"] for d in httpx.get(f"{url}/v1/documents", headers=headers).json()["data"]} != {"learned"}:
            assert time.time() < deadline, "queued work did not resume"
            time.sleep(0.1)
        leftovers = {p.name for p in (state / "adapters").iterdir()}
        assert not any(name.endswith(".partial") for name in leftovers)
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_serve_without_an_admin_key_is_one_line(tmp_path, monkeypatch, capsys):
    from seal.cli import main

    monkeypatch.delenv("SEAL_ADMIN_KEY", raising=False)
    assert main(["serve", "--model", "tiny-random", "--state", str(tmp_path / "state")]) == 2
    assert capsys.readouterr().err.strip() == (
        "seal: error: set SEAL_ADMIN_KEY to a secret of 16 characters or more (e.g. $(openssl rand -hex 32))"
    )
    assert not (tmp_path / "state").exists()


def test_serve_on_a_state_directory_in_use_is_one_line(served, monkeypatch, capsys):
    from seal.cli import main

    _, model = served
    monkeypatch.setenv("SEAL_ADMIN_KEY", ADMIN)
    assert main(["serve", "--model", "tiny-random", "--state", str(model.directory)]) == 2
    assert capsys.readouterr().err.strip() == (
        f"seal: error: {model.directory} is in use by process {os.getpid()}; one process at a time may use it"
    )
