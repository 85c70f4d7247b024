"""Load on `seal serve`, on loopback only: concurrent chat clients for a while with nothing being
learned, then as long again while documents are learned. Bounded in requests and in time.

Starts its own server (``seal serve`` on 127.0.0.1, a fresh state directory), makes a tenant that has
learned one demo passage, then runs ``--clients`` threads, each sending the demo questions one after
another (``--max-tokens`` each), for ``--seconds`` per phase or ``--max-requests`` in all. Records
latency percentiles, throughput and errors per phase, and how far learning got meanwhile.

    .venv/bin/python benchmarks/serve_load.py [--model smollm2-135m] [--clients 16] [--seconds 120]
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np

from seal.domains.knowledge.data import demo_data_path, load_passages
from seal.machine import describe


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=120.0, help="per phase")
    parser.add_argument("--max-requests", type=int, default=5000, help="per phase, at most")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--out", default="benchmarks/results/serve_load.json")
    args = parser.parse_args()
    passages = load_passages(demo_data_path())
    questions = [q.question for p in passages for q in p.questions]
    admin = secrets.token_hex(16)
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    server = _start(args.model, port, admin)
    try:
        key = httpx.post(f"{url}/v1/tenants", headers={"Authorization": f"Bearer {admin}"}).json()["api_key"]
        headers = {"Authorization": f"Bearer {key}"}
        first = httpx.post(f"{url}/v1/documents", headers=headers, json={"text": passages[0].context}).json()["id"]
        _wait(url, headers, lambda docs: docs[first] == "learned", 1800)
        phases = {"idle": _phase(url, headers, questions, args)}
        queued = [httpx.post(f"{url}/v1/documents", headers=headers, json={"text": p.context}).json()["id"]
                  for p in passages[1:4]]  # fmt: skip
        _wait(url, headers, lambda docs: docs[queued[0]] == "learning", 600)
        phases["learning"] = _phase(url, headers, questions, args)
        statuses = _statuses(url, headers)
        phases["learning"]["documents_learned_during_phase"] = sum(statuses[d] == "learned" for d in queued)
        phases["learning"]["still_learning_at_end"] = any(statuses[d] in ("queued", "learning") for d in queued)
        metrics = httpx.get(f"{url}/metrics").text
    finally:
        server.terminate()
        server.wait(timeout=60)
    ratio = phases["learning"]["p95_seconds"] / phases["idle"]["p95_seconds"]
    payload = {
        "command": "benchmarks/serve_load.py "
        + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items()),
        "machine": describe(),
        "phases": phases,
        "p95_learning_over_idle": round(ratio, 3),
        "server_metrics": [line for line in metrics.splitlines() if line.startswith("seal_")],
    }
    Path(args.out).write_text(json.dumps(payload, indent=1) + "\n")
    for name, phase in phases.items():
        print(f"{name:>8}: {phase['requests']} requests, {phase['errors']} errors, p50 {phase['p50_seconds']:.2f} s, "
              f"p95 {phase['p95_seconds']:.2f} s, {phase['requests_per_second']:.2f} req/s")  # fmt: skip
    print(f"p95 while learning / p95 idle: {ratio:.2f}")


def _phase(url: str, headers: dict, questions: list[str], args: argparse.Namespace) -> dict:
    latencies: list[float] = []
    errors: list[str] = []
    tokens = [0]
    lock = threading.Lock()
    deadline = time.time() + args.seconds
    budget = [args.max_requests]

    def client(index: int) -> None:
        with httpx.Client(timeout=300) as http:
            turn = index
            while time.time() < deadline:
                with lock:
                    if budget[0] == 0:
                        return
                    budget[0] -= 1
                body = {"messages": [{"role": "user", "content": questions[turn % len(questions)]}],
                        "max_tokens": args.max_tokens}  # fmt: skip
                turn += args.clients
                started = time.perf_counter()
                try:
                    response = http.post(f"{url}/v1/chat/completions", headers=headers, json=body)
                    response.raise_for_status()
                    used = response.json()["usage"]["completion_tokens"]
                except (httpx.HTTPError, KeyError, ValueError) as error:
                    with lock:
                        errors.append(f"{type(error).__name__}: {error}")
                    continue
                with lock:
                    latencies.append(time.perf_counter() - started)
                    tokens[0] += used

    started = time.perf_counter()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(args.clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    values = np.array(latencies) if latencies else np.array([float("nan")])
    return {
        "requests": len(latencies) + len(errors),
        "errors": len(errors),
        "first_errors": errors[:5],
        "wall_seconds": round(wall, 1),
        "p50_seconds": float(np.percentile(values, 50)),
        "p95_seconds": float(np.percentile(values, 95)),
        "p99_seconds": float(np.percentile(values, 99)),
        "requests_per_second": len(latencies) / wall,
        "tokens_per_second": tokens[0] / wall,
    }


def _statuses(url: str, headers: dict) -> dict[str, str]:
    return {d["id"]: d["status"] for d in httpx.get(f"{url}/v1/documents", headers=headers).json()["data"]}


def _wait(url: str, headers: dict, done, seconds: float) -> None:
    deadline = time.time() + seconds
    while not done(_statuses(url, headers)):
        if time.time() > deadline:
            raise SystemExit("benchmark: the server did not get there in time")
        time.sleep(0.5)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(model: str, port: int, admin: str) -> subprocess.Popen:
    state = tempfile.mkdtemp(prefix="seal-serve-load-")
    seal = str(Path(sys.executable).with_name("seal"))
    command = [seal, "serve", "--model", model, "--state", state, "--port", str(port), "--lora.base_precision", "fp32"]
    server = subprocess.Popen(command, env={**os.environ, "SEAL_ADMIN_KEY": admin})
    deadline = time.time() + 600
    while time.time() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return server
        except httpx.HTTPError:
            time.sleep(0.5)
        if server.poll() is not None:
            raise SystemExit("benchmark: the server stopped")
    server.kill()
    raise SystemExit("benchmark: the server did not start")


if __name__ == "__main__":
    main()
