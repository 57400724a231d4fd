"""The workshop board: what the team found, as items the facilitator (through Gemini's tools)
and the team keep across steps. Here are the items' rules and the tools' contract; the store
is `ports.Board`, the round loop that runs the tools is `generation.drive`.

Everything a tool is given comes from the model, so it is checked as strictly as a request
body: a call with bad arguments writes nothing, and the model is told why in its result.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Literal, get_args

from .blocks import data_block
from .errors import InvalidRequest

Kind = Literal["insight", "persona", "need", "pov", "hmw", "idea", "plan", "feedback"]
KINDS: tuple[Kind, ...] = get_args(Kind)
# The order the workshop produces them in: the board is shown that way.
KIND_ORDER = {kind: n for n, kind in enumerate(KINDS)}
ToolName = Literal["add_board_items", "update_board_item", "remove_board_item"]
TOOL_NAMES: tuple[ToolName, ...] = get_args(ToolName)

MAX_TITLE_CHARS = 200
MAX_DETAIL_CHARS = 2000
MAX_ITEMS_PER_CALL = 10
MAX_BOARD_ITEMS = 300  # a workshop's worth, and what a turn's context can carry
MAX_ITEM_ID_CHARS = 64


@dataclass(frozen=True)
class BoardItem:
    id: str
    kind: Kind
    title: str
    detail: str
    step_id: str
    created_by: str  # "facilitator" or the uid of the member who wrote it
    source_message_id: str | None
    created_at: float
    updated_at: float
    version: int = 1


@dataclass(frozen=True)
class NewItem:
    kind: Kind
    title: str
    detail: str


@dataclass(frozen=True)
class Change:
    """A change to one item's text; None leaves the field as it is."""

    item_id: str
    title: str | None = None
    detail: str | None = None


class BoardError(InvalidRequest):
    """An item or a tool call that breaks the board's rules; its message is safe for the model
    and for people (it names fields and limits, never quotes what was sent)."""


# --- Checks: a request body or a model's arguments alike ---------------------------------------


def _text(raw: Any, name: str, limit: int, required: bool) -> str | None:
    if raw is None and not required:
        return None
    if not isinstance(raw, str) or (required and not raw.strip()):
        raise BoardError("invalid_board_item", f"{name} must be a non-empty string")
    if len(raw) > limit:
        raise BoardError("invalid_board_item", f"{name} may be at most {limit} characters")
    try:
        raw.encode()
    except UnicodeEncodeError:
        raise BoardError("invalid_board_item", f"{name} is not valid Unicode") from None
    return raw.strip()


def _object(raw: Any, allowed: set[str], what: str) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise BoardError("invalid_board_item", f"{what} must be an object")
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise BoardError("invalid_board_item", f"{what} takes only {', '.join(sorted(allowed))}")
    return raw


def check_item_id(raw: Any) -> str:
    ok = isinstance(raw, str) and 0 < len(raw) <= MAX_ITEM_ID_CHARS
    if not ok or not raw.replace("-", "").replace("_", "").isalnum() or not raw.isascii():
        raise BoardError("invalid_board_item", "id must name a board item")
    return str(raw)


def check_new(raw: Any) -> NewItem:
    item = _object(raw, {"kind", "title", "detail"}, "an item")
    kind = item.get("kind")
    if kind not in KINDS:
        raise BoardError("invalid_board_item", f"kind must be one of {', '.join(KINDS)}")
    title = _text(item.get("title"), "title", MAX_TITLE_CHARS, True)
    detail = _text(item.get("detail", ""), "detail", MAX_DETAIL_CHARS, False)
    return NewItem(kind, title or "", detail or "")


def check_change(item_id: str, raw: Any) -> Change:
    fields = _object(raw, {"title", "detail"}, "a change")
    title = _text(fields.get("title"), "title", MAX_TITLE_CHARS, False)
    detail = _text(fields.get("detail"), "detail", MAX_DETAIL_CHARS, False)
    if title == "":
        raise BoardError("invalid_board_item", "title must be a non-empty string")
    if title is None and detail is None:
        raise BoardError("invalid_board_item", "a change needs a title or a detail")
    return Change(item_id, title, detail)


def check_added(args: Any) -> tuple[NewItem, ...]:
    """`add_board_items`' arguments."""
    call = _object(args, {"items"}, "add_board_items")
    items = call.get("items")
    if not isinstance(items, list) or not items:
        raise BoardError("invalid_board_item", "items must be a non-empty list")
    if len(items) > MAX_ITEMS_PER_CALL:
        raise BoardError("invalid_board_item", f"at most {MAX_ITEMS_PER_CALL} items a call")
    return tuple(check_new(item) for item in items)


def check_updated(args: Any) -> Change:
    call = _object(args, {"id", "title", "detail"}, "update_board_item")
    item_id = check_item_id(call.get("id"))
    return check_change(item_id, {k: v for k, v in call.items() if k != "id"})


def check_removed(args: Any) -> str:
    call = _object(args, {"id"}, "remove_board_item")
    return check_item_id(call.get("id"))


def item_id_for(reply_id: str, call_key: str, index: int) -> str:
    """The id of the `index`-th item a reply's call adds: the same for a retry, a takeover or
    a re-send of that call, so none of them adds it twice."""
    digest = hashlib.sha256(f"{reply_id}\0{call_key}\0{index}".encode()).hexdigest()
    return f"b{digest[:23]}"


def in_workshop_order(items: list[BoardItem], step_order: dict[str, int]) -> list[BoardItem]:
    """By step (the workshop's order, then first seen), then kind, then creation."""
    last = len(step_order)
    return sorted(
        items, key=lambda i: (step_order.get(i.step_id, last), KIND_ORDER[i.kind], i.created_at)
    )


BOARD_OPEN, BOARD_CLOSE = "<workshop-board>", "</workshop-board>"


def board_block(items: list[BoardItem], budget: int) -> str | None:
    """The board as data for the conversation's first turn, like the earlier steps' notes:
    one JSON object an item (with its id, for the tools), the latest steps' items kept first
    within `budget`, and `<` `>` escaped so that no item can close the block."""
    records = [
        {"id": i.id, "step": i.step_id, "kind": i.kind, "title": i.title, "detail": i.detail}
        for i in items
    ]
    return data_block(BOARD_OPEN, BOARD_CLOSE, records, budget)


# --- The tools, as the model is told of them -------------------------------------------------


@dataclass(frozen=True)
class ToolSpec:
    """A function the model may call: its JSON schema is what Gemini is declared."""

    name: ToolName
    description: str
    parameters: dict[str, Any]
    needs_approval: bool = False


_ITEM = {
    "type": "object",
    "properties": {
        "kind": {"type": "string", "enum": list(KINDS)},
        "title": {"type": "string", "description": f"at most {MAX_TITLE_CHARS} characters"},
        "detail": {"type": "string", "description": f"at most {MAX_DETAIL_CHARS} characters"},
    },
    "required": ["kind", "title"],
}
TOOLS: dict[ToolName, ToolSpec] = {
    "add_board_items": ToolSpec(
        "add_board_items",
        "Add what the team found to the workshop board: insights, personas, needs, a point "
        "of view (pov), How might we questions (hmw), ideas, a prototype plan, test feedback. "
        "Returns the new items' ids.",
        {
            "type": "object",
            "properties": {"items": {"type": "array", "items": _ITEM, "maxItems": 10}},
            "required": ["items"],
        },
    ),
    "update_board_item": ToolSpec(
        "update_board_item",
        "Change the title or the detail of a board item, by its id.",
        {
            "type": "object",
            "properties": {
                "id": {"type": "string"},
                "title": {"type": "string"},
                "detail": {"type": "string"},
            },
            "required": ["id"],
        },
    ),
    "remove_board_item": ToolSpec(
        "remove_board_item",
        "Remove a board item, by its id. The team is asked to approve first.",
        {"type": "object", "properties": {"id": {"type": "string"}}, "required": ["id"]},
        needs_approval=True,
    ),
}
