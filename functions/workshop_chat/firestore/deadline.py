"""One deadline for a Firestore call and its retries.

The client's default retry keeps trying UNAVAILABLE for a minute or more. A user waiting on a
stream, or on a usage figure, is better served by a clear 503 than by that minute.
"""

from __future__ import annotations

from google.api_core.retry import Retry


def retry_within(timeout: float) -> Retry:
    """Retries of UNAVAILABLE and the like, all within `timeout` seconds."""
    return Retry(initial=0.05, maximum=0.5, multiplier=2.0, timeout=timeout)
