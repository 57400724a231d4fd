"""Gemini behind one small interface: text in, text events and a mapped finish out.

Retries live here, not in the SDK, because only this module knows whether anything has been
yielded yet: retrying after the first byte would silently restart a reply the user is reading.
No upstream error text ever leaves this module; callers get our own exception types.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import random
import re
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from ..chat.board import ToolSpec
from ..chat.domain import FinishReason, ToolCall
from ..chat.errors import ModelFailed, ModelUnavailable
from ..chat.ports import (
    FileParts,
    ModelDone,
    ModelItem,
    ModelSource,
    ModelText,
    ModelThought,
    ModelToolCall,
)

log = logging.getLogger("workshop_chat.cloud.gemini")

RETRYABLE = frozenset({408, 429, 500, 502, 503, 504})

# Gemini's finish reasons, mapped to the values every AI SDK client accepts.
_FINISH: dict[str, FinishReason] = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    "SAFETY": "content-filter",
    "RECITATION": "content-filter",
    "BLOCKLIST": "content-filter",
    "PROHIBITED_CONTENT": "content-filter",
    "SPII": "content-filter",
    "IMAGE_SAFETY": "content-filter",
    "MALFORMED_FUNCTION_CALL": "error",
}


def combines_tools(model: str) -> bool:
    """Whether the model takes Google Search and function declarations in one request: Gemini
    3 and later do; before, a request with both is refused, so search goes alone."""
    found = re.match(r"gemini-(\d+)", model)
    return found is not None and int(found.group(1)) >= 3


def finish_reason(gemini_reason: str | None) -> FinishReason:
    if not gemini_reason or gemini_reason == "FINISH_REASON_UNSPECIFIED":
        return "stop"
    return _FINISH.get(gemini_reason, "other")


def make_client(max_connections: int, **options: Any) -> Any:
    """One client per process; its pool must hold every concurrent stream, or they queue.

    The async transport is named, not left to the SDK: it would pick aiohttp wherever that
    happens to be installed, so tests and production would read streams differently. No read
    timeout: the reply's read deadline and total limit are enforced by the generation itself
    (`generation.drive`), in the same place that decides how the reply ends. `options` (api_key,
    base_url) are for tests; deployed, the SDK reads its own environment variables.
    """
    import httpx2
    from google import genai
    from google.genai import types

    limits = httpx2.Limits(
        max_connections=max_connections, max_keepalive_connections=max_connections
    )
    timeout = httpx2.Timeout(None, connect=10.0)
    base_url = options.pop("base_url", None)
    hooks = {"request": [_sending]}
    return genai.Client(
        **options,
        http_options=types.HttpOptions(
            base_url=base_url,
            client_args={"limits": limits, "timeout": timeout},
            httpx_async_client=httpx2.AsyncClient(
                limits=limits, timeout=timeout, event_hooks=hooks
            ),
        ),
    )


# Who to tell that the request of the task running now is leaving (see `Gemini.stream`).
_ON_SENT: ContextVar[Callable[[], None] | None] = ContextVar("on_sent", default=None)


async def _sending(request: Any) -> None:
    """httpx's request hook: the SDK has built the request, the transport sends it next."""
    on_sent = _ON_SENT.get()
    if on_sent is not None:
        on_sent()


HARM_CATEGORIES = (
    "HARM_CATEGORY_HARASSMENT",
    "HARM_CATEGORY_HATE_SPEECH",
    "HARM_CATEGORY_SEXUALLY_EXPLICIT",
    "HARM_CATEGORY_DANGEROUS_CONTENT",
)


@dataclass(frozen=True)
class Generation:
    """How the model is asked to answer; None leaves Gemini's own default."""

    temperature: float | None = None
    max_output_tokens: int | None = None
    thinking_budget: int | None = None  # -1: the model decides; 0: off where allowed
    include_thoughts: bool = False
    google_search: bool = False
    safety_threshold: str | None = None  # config.SAFETY_THRESHOLDS: all four categories


@dataclass(frozen=True)
class Retries:
    """Retries before the first byte of a reply reaches anyone."""

    attempts: int
    initial_delay: float
    max_wait: float


class Gemini:
    """Streams one reply; the SDK client is injected so tests can point it at the stand-in."""

    def __init__(
        self,
        client: Any,
        name: str,
        *,
        generation: Generation = Generation(),
        retries: Retries,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        summary_model: str,
    ) -> None:
        self.client = client
        self.name = name
        self.summary_model = summary_model
        self.generation = generation
        self.retries = retries
        self.sleep = sleep
        self._tools: dict[tuple[str, ...], Any] = {}

    def _config(
        self,
        system: str,
        request: list[Any],
        thinking_budget: int | None,
        functions: tuple[ToolSpec, ...] = (),
    ) -> Any:
        from google.genai import types

        g = self.generation
        budget = g.thinking_budget if thinking_budget is None else thinking_budget
        thinking = None
        if budget is not None or g.include_thoughts:
            thinking = types.ThinkingConfig(
                thinking_budget=budget, include_thoughts=g.include_thoughts or None
            )
        tools: list[Any] = []
        if g.google_search:
            tools.append(types.Tool(google_search=types.GoogleSearch()))
        if functions and (not g.google_search or combines_tools(self.name)):
            tools.append(self._declared(functions))
        safety = None
        if g.safety_threshold:
            safety = [
                types.SafetySetting(
                    category=types.HarmCategory(category),
                    threshold=types.HarmBlockThreshold(g.safety_threshold),
                )
                for category in HARM_CATEGORIES
            ]
        config = types.GenerateContentConfig(
            system_instruction=system,
            temperature=g.temperature,
            max_output_tokens=g.max_output_tokens,
            thinking_config=thinking,
            tools=tools or None,
            safety_settings=safety,
        )
        # Set after validation, which would copy the history into a plain dict.
        options = types.HttpOptions()
        options.extra_body = _Shared(contents=request)
        config.http_options = options
        return config

    def _declared(self, functions: tuple[ToolSpec, ...]) -> Any:
        """The function declarations as the SDK takes them, built once per set of tools: the
        same few on every turn."""
        from google.genai import types

        key = tuple(f.name for f in functions)
        tool = self._tools.get(key)
        if tool is None:
            declared = [
                types.FunctionDeclaration(
                    name=f.name, description=f.description, parameters_json_schema=f.parameters
                )
                for f in functions
            ]
            tool = self._tools[key] = types.Tool(function_declarations=declared)
        return tool

    async def stream(
        self,
        system: str,
        contents: list[tuple[str, str]],
        thinking_budget: int | None = None,
        files: FileParts | None = None,
        on_sent: Callable[[], None] | None = None,
        *,
        tools: tuple[ToolSpec, ...] = (),
        calls: Mapping[int, tuple[ToolCall, ...]] | None = None,
    ) -> AsyncGenerator[ModelItem, None]:
        """`thinking_budget` overrides the configured one (a step's own setting); `files[i]`
        are Gemini parts (inline data, file data, notes) that follow contents[i]'s text;
        `calls[i]` become function call parts in a model content and function responses in
        a user content."""
        from google.genai import errors

        # google-genai converts every message of `contents` through pydantic on every call:
        # ~0.3-1 ms a message, so 200 stored messages delayed the first token by 60-200 ms
        # (bench.sh). The SDK gets only the new message to convert, and the whole history
        # goes in as the body's `contents` through `extra_body`, which replaces the converted
        # list as is: the same request on the wire, at a cost that no longer grows.
        request: list[Any] = [
            {
                "role": role,
                "parts": [
                    *([{"text": text}] if text else []),
                    *((files or {}).get(i) or []),
                    *_call_parts(role, (calls or {}).get(i) or ()),
                ],
            }
            for i, (role, text) in enumerate(contents)
        ]
        config = self._config(system, request, thinking_budget, tools)
        _ON_SENT.set(on_sent)  # this task's own context: other streams keep theirs
        waited = 0.0
        attempts = self.retries.attempts
        for attempt in range(1, attempts + 1):
            yielded = False
            try:
                last: Any = None
                response = await self.client.aio.models.generate_content_stream(
                    model=self.name, contents=request[-1:], config=config
                )
                async for chunk in response:
                    last = chunk
                    for item in _items_of(chunk):
                        yielded = True
                        yield item
                yield _done(last, self.name)
                return
            except errors.APIError as exc:
                if yielded:
                    log.warning("gemini failed mid-stream", extra={"fields": {"code": exc.code}})
                    raise ModelFailed("mid-stream") from None
                retry_after = _retry_after(exc)
                if exc.code not in RETRYABLE:
                    log.error("gemini refused the request", extra={"fields": {"code": exc.code}})
                    raise ModelFailed("refused") from None
                delay = self._delay(attempt, retry_after)
                if attempt == attempts or waited + delay > self.retries.max_wait:
                    log.warning(
                        "gemini unavailable, giving up",
                        extra={"fields": {"code": exc.code, "attempts": attempt}},
                    )
                    raise ModelUnavailable(retry_after) from None
                log.info(
                    "gemini unavailable, retrying",
                    extra={"fields": {"code": exc.code, "attempt": attempt, "delay": delay}},
                )
                waited += delay
                await self.sleep(delay)
            except (ModelFailed, ModelUnavailable):
                raise
            except Exception as exc:  # noqa: BLE001 - transport: refused, reset, cut
                name = type(exc).__name__
                if yielded:
                    log.warning("gemini stream broke", extra={"fields": {"error": name}})
                    raise ModelFailed("transport") from None
                delay = self._delay(attempt, None)
                if attempt == attempts or waited + delay > self.retries.max_wait:
                    log.warning("gemini unreachable", extra={"fields": {"error": name}})
                    raise ModelUnavailable(None) from None
                waited += delay
                await self.sleep(delay)
        raise ModelUnavailable(None)  # pragma: no cover - the loop always returns or raises

    async def summarize(
        self, system: str, prompt: str, max_chars: int
    ) -> tuple[str, dict[str, int] | None]:
        """One non-streamed call for a step's outcome; no retries: the next reply retries.

        Raises ModelFailed, with nothing of the upstream's text.
        """
        from google.genai import errors, types

        config = types.GenerateContentConfig(
            system_instruction=system,
            max_output_tokens=max(256, max_chars // 2),
        )
        try:
            async with asyncio.timeout(120):
                response = await self.client.aio.models.generate_content(
                    model=self.summary_model, contents=prompt, config=config
                )
        except errors.APIError as exc:
            log.warning("summary call refused", extra={"fields": {"code": exc.code}})
            raise ModelFailed("summary") from None
        except Exception as exc:  # noqa: BLE001 - transport and time-outs
            log.warning("summary call failed", extra={"fields": {"error": type(exc).__name__}})
            raise ModelFailed("summary") from None
        return _text_of(response), _usage(response.usage_metadata)

    def _delay(self, attempt: int, retry_after: int | None) -> float:
        if retry_after is not None:
            return float(retry_after)
        backoff: float = self.retries.initial_delay * 2 ** (attempt - 1)
        return backoff * (0.5 + random.random() / 2)


class _Shared(dict[str, Any]):
    """The request body's `contents`, handed to the SDK inside its config: the SDK deep-copies
    the config twice per call, which for a whole history cost O(history) per turn on the event
    loop. Nothing writes to it after it is built, so the copy can be this same dict."""

    def __deepcopy__(self, memo: dict[int, Any]) -> _Shared:
        return self


def _call_parts(role: str, calls: tuple[ToolCall, ...]) -> list[dict[str, Any]]:
    """A model content's function calls (each with its thought signature, which Gemini 3
    demands back within a turn), or a user content's function responses."""
    parts: list[dict[str, Any]] = []
    for call in calls:
        if role == "model":
            part: dict[str, Any] = {"functionCall": {"name": call.name, "args": call.input}}
            if call.signature:
                part["thoughtSignature"] = call.signature
        else:
            if call.state == "output-available":
                response: dict[str, Any] = {"result": call.output}
            elif call.state == "output-denied":
                response = {"denied": call.reason or "the team did not approve it"}
            else:
                response = {"error": call.error_text or "the tool failed"}
            part = {"functionResponse": {"name": call.name, "response": response}}
        parts.append(part)
    return parts


def _items_of(chunk: Any) -> list[ModelItem]:
    """Thought summaries, answer text, function calls and grounding sources, in the order
    Gemini sent them."""
    items: list[ModelItem] = []
    candidates = chunk.candidates or []
    if not candidates:
        return items
    candidate = candidates[0]
    for part in (candidate.content.parts if candidate.content else None) or []:
        if part.function_call is not None:
            call = part.function_call
            signature = part.thought_signature
            text = base64.b64encode(signature).decode() if signature else None
            items.append(ModelToolCall(call.name or "", dict(call.args or {}), text))
        elif part.text:
            items.append(ModelThought(part.text) if part.thought else ModelText(part.text))
    grounding = candidate.grounding_metadata
    for source in (grounding.grounding_chunks if grounding else None) or []:
        if source.web and source.web.uri:
            items.append(ModelSource(source.web.uri, source.web.title))
    return items


def _text_of(chunk: Any) -> str:
    candidates = chunk.candidates or []
    if not candidates or not candidates[0].content or not candidates[0].content.parts:
        return ""
    # Thought summaries are not part of the answer.
    return "".join(p.text for p in candidates[0].content.parts if p.text and not p.thought)


def _done(last: Any, default_model: str) -> ModelDone:
    if last is None:
        return ModelDone("other", None, default_model)
    usage = _usage(last.usage_metadata)
    model = last.model_version or default_model
    feedback = last.prompt_feedback
    if feedback is not None and feedback.block_reason:
        return ModelDone("content-filter", usage, model, blocked=True)
    candidates = last.candidates or []
    reason = candidates[0].finish_reason if candidates else None
    mapped = finish_reason(getattr(reason, "value", reason))
    return ModelDone(mapped, usage, model, blocked=mapped == "content-filter")


def _usage(meta: Any) -> dict[str, int] | None:
    if meta is None:
        return None
    usage = {
        "inputTokens": meta.prompt_token_count,
        "outputTokens": meta.candidates_token_count,
        "totalTokens": meta.total_token_count,
        "reasoningTokens": meta.thoughts_token_count,
        "cachedInputTokens": meta.cached_content_token_count,
    }
    return {k: v for k, v in usage.items() if isinstance(v, int)} or None


def _retry_after(exc: Any) -> int | None:
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None)
    if not headers:
        return None
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0, min(int(float(value)), 3600))
    except ValueError:
        return None
