"""A workshop is a team: the owner (who created the session), members who chat, and viewers who
read. Here are the roles' rights and the invites' rules; the store is `ports.Team`.

An invite's code is a random secret shown once to the owner; only its hash is stored, so a
leaked database gives no way in.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Literal

from .domain import Event, Failed
from .errors import Forbidden, InvalidRequest, StoreUnavailable

Role = Literal["owner", "member", "viewer"]
Joined = Literal["member", "viewer"]  # what an invite makes its holder
WRITERS: tuple[Role, ...] = ("owner", "member")

INVITE_SECONDS = 7 * 24 * 3600  # an invite's life
MAX_MEMBERS = 50  # members and viewers of one session
MAX_NAME_CHARS = 80
CODE_BYTES = 18  # 144 bits: a code is never guessed


@dataclass(frozen=True)
class Member:
    uid: str
    name: str
    role: Joined
    joined_at: float = 0.0


@dataclass(frozen=True)
class Invite:
    """What an invite's hash stands for."""

    role: Joined
    expires_at: float


def new_code() -> str:
    return secrets.token_urlsafe(CODE_BYTES)


def code_hash(code: str) -> str:
    return hashlib.sha256(code.encode()).hexdigest()


def check_code(raw: object) -> str:
    if not isinstance(raw, str) or not 16 <= len(raw) <= 64 or not raw.isascii():
        raise InvalidRequest("invalid_code", "code must be an invite code")
    return raw


def check_role(raw: object) -> Joined:
    if raw == "member":
        return "member"
    if raw == "viewer":
        return "viewer"
    raise InvalidRequest("invalid_member_role", "role must be member or viewer")


def check_name(raw: object) -> str:
    if raw is None:
        return ""
    if not isinstance(raw, str) or len(raw) > MAX_NAME_CHARS or "\x00" in raw:
        raise InvalidRequest("invalid_name", f"name is a string of at most {MAX_NAME_CHARS}")
    try:
        raw.encode()
    except UnicodeEncodeError:
        raise InvalidRequest("invalid_name", "name is not valid Unicode") from None
    return raw.strip()


def role_in(owner: str | None, members: Iterable[Member], uid: str) -> Role | None:
    """The caller's place in a session that exists: its owner, one of its team, or none."""
    if owner == uid:
        return "owner"
    return next((m.role for m in members if m.uid == uid), None)


def must_write(role: Role | None) -> None:
    """Owners and members chat, stop, attach and change the board; viewers only read."""
    if role is not None and role not in WRITERS:
        raise Forbidden("forbidden", "viewers may read this session, not write to it")


def must_own(role: Role | None) -> None:
    if role is not None and role != "owner":
        raise Forbidden("forbidden", "only the session's owner may do that")


LEFT_TEXT = "You are no longer in this session."


def while_member(
    events: Iterator[Event], still_in: Callable[[], bool], every: float, clock: Callable[[], float]
) -> Iterator[Event]:
    """`events` for as long as their listener is in the team, looked up at most every `every`
    seconds (a stream pings at least every keep-alive): once they are not, it ends, and
    closing it lets go of the reply, which carries on."""
    checked = clock()
    try:
        for event in events:
            if clock() - checked >= every:
                checked = clock()
                try:
                    gone = not still_in()
                except StoreUnavailable:
                    gone = False  # not known to be gone: looked up again next time
                if gone:
                    yield Failed(LEFT_TEXT, cause="replaced")
                    return
            yield event
    finally:
        close = getattr(events, "close", None)
        if close is not None:
            close()
