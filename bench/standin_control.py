"""The stand-in's control API, and the request the function would send it."""

from __future__ import annotations

import json
import urllib.request
from typing import Any

MODEL = "gemini-2.5-flash"
MODEL_PATH = f"/v1/models/{MODEL}:streamGenerateContent?alt=sse"


def configure(url: str, **knobs: Any) -> None:
    """Replace the stand-in's default knobs (a directive in the user text still wins)."""
    request = urllib.request.Request(
        f"{url}/_standin/config",
        data=json.dumps(knobs).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    urllib.request.urlopen(request, timeout=10).close()


def reset(url: str) -> None:
    request = urllib.request.Request(f"{url}/_standin/requests", method="DELETE")
    urllib.request.urlopen(request, timeout=10).close()


def model_body(system: str, contents: list[dict[str, Any]]) -> dict[str, Any]:
    """The streamGenerateContent body google-genai builds for the function (same contents)."""
    return {
        "contents": contents,
        "systemInstruction": {"parts": [{"text": system}], "role": "user"},
        "generationConfig": {"maxOutputTokens": 8192},
    }
