"""Entry point for functions-framework: registers the HTTP function `chat`, nothing else."""

import flask
import functions_framework

from workshop_chat.service import build_from_env

_api = build_from_env()


@functions_framework.http
def chat(request: flask.Request) -> flask.Response:
    return _api(request)
