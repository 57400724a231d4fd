"""A client of the stand-in's control API, for the tests and the benchmark."""

from __future__ import annotations

import json
import urllib.request
from typing import Any


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
    """Forget the recording, and the knobs too: `configure` again after this."""
    request = urllib.request.Request(f"{url}/_standin/requests", method="DELETE")
    urllib.request.urlopen(request, timeout=10).close()
