"""The stand-in's control API, and the request the function would send it."""

from __future__ import annotations

import json
import urllib.request
from typing import Any

from standin.control import configure, reset  # noqa: F401 - the bench's API

MODEL = "gemini-2.5-flash"
MODEL_PATH = f"/v1/models/{MODEL}:streamGenerateContent?alt=sse"


def model_body(system: str, contents: list[dict[str, Any]]) -> dict[str, Any]:
    """The streamGenerateContent body google-genai builds for the function (same contents)."""
    return {
        "contents": contents,
        "systemInstruction": {"parts": [{"text": system}], "role": "user"},
        "generationConfig": {"maxOutputTokens": 8192},
    }


def recorded(url: str) -> list[dict[str, Any]]:
    """Every request the stand-in has recorded since its last reset (a bounded deque of
    MAX_RECORDED in standin/gemini_standin.py: read it before that many arrive)."""
    with urllib.request.urlopen(f"{url}/_standin/requests", timeout=60) as response:
        return json.loads(response.read())["requests"]
