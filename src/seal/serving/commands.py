"""``seal serve``: a self-adapting model behind HTTP (:mod:`seal.serving.app`), on uvicorn."""

from __future__ import annotations

import os
import sys

from jsonargparse import ArgumentParser, Namespace

from seal.commands import Command, add_config, config, register_command
from seal.serving.config import ServeConfig
from seal.serving.model import SelfAdaptingModel


def _arguments(parser: ArgumentParser) -> None:
    add_config(parser)
    parser.add_class_arguments(ServeConfig, None)
    parser.add_argument("--state", required=True, help="the directory holding everything learned (made if new)")
    parser.add_argument("--host", default="127.0.0.1", help="the address to listen on")
    parser.add_argument("--port", type=int, default=8000, help="the port to listen on")
    parser.add_argument("--max_body_bytes", type=int, default=1 << 20, help="larger request bodies are refused")


def _serve(args: Namespace) -> None:
    try:
        import uvicorn

        from seal.serving.app import create_app
    except ImportError as error:
        raise ValueError(f"seal serve needs {error.name}: pip install 'seal-lm[serve]'") from error

    admin_key = os.environ.get("SEAL_ADMIN_KEY", "")
    if len(admin_key) < 16:
        raise ValueError("set SEAL_ADMIN_KEY to a secret of 16 characters or more (e.g. $(openssl rand -hex 32))")
    model = SelfAdaptingModel(config(ServeConfig, args), args.state)
    url = f"http://{args.host}:{args.port}"
    print(f"seal serve: {url}/ (create a tenant: POST {url}/v1/tenants with the admin key)", file=sys.stderr)
    app = create_app(model, admin_key, args.max_body_bytes)
    try:
        uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    finally:
        model.close()


register_command("serve", Command("serve a model that learns documents, for many tenants", _arguments, _serve))
