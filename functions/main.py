"""Entry point for functions-framework: registers the HTTP function `chat`, nothing else."""

import functions_framework

from workshop_chat.service import build_from_env

_api = build_from_env()


@functions_framework.http
def chat(request):  # noqa: ANN001, ANN201 - the framework's signature
    return _api(request)
