"""Firestore: where messages live and how a reply is claimed, checkpointed and finished.

Layout: sessions/{sessionId}/steps/{stepId}/messages/{messageId}. Every write that changes a
step's history also writes a fresh `revision` token on the step document, so an instance can
keep the history in memory and prove it current with one small read instead of re-reading a
history that grows with every turn.
"""

from __future__ import annotations

import threading
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from google.api_core import exceptions as gexc
from google.api_core.retry import Retry
from google.cloud import firestore

from .turn import LostClaim, Message, NotFound, StoreUnavailable, UserMessage

# Fail fast: a user waiting on a stream is better served by a clear 503 than a minute of retries.
# The reply sorts right after its user message, whatever the clocks of other instances say.
_REPLY_OFFSET = 0.001
_RATE_LOCKS = tuple(threading.Lock() for _ in range(64))


def _ts(value: float) -> datetime:
    return datetime.fromtimestamp(value, UTC)


def _seconds(value: Any) -> float:
    return value.timestamp() if isinstance(value, datetime) else 0.0


def _text(parts: Any) -> str:
    if not isinstance(parts, list):
        return ""
    return "".join(
        p.get("text", "") for p in parts if isinstance(p, dict) and p.get("type") == "text"
    )


def _message(doc_id: str, data: dict[str, Any]) -> Message:
    return Message(
        id=doc_id,
        role=data.get("role", "user"),
        text=_text(data.get("parts")),
        status=data.get("status", "complete"),
        created_at=_seconds(data.get("createdAt")),
        updated_at=_seconds(data.get("updatedAt")),
        reply_to=data.get("replyTo"),
        finish_reason=data.get("finishReason"),
        usage=data.get("usage"),
        model=data.get("model"),
        generation=data.get("generation"),
    )


def _parts(text: str) -> list[dict[str, str]]:
    return [{"type": "text", "text": text}] if text else []


@dataclass
class Conversation:
    """One step's history as of `revision`, oldest first."""

    session_id: str
    step_id: str
    uid: str
    session_exists: bool
    step_exists: bool
    revision: str | None
    messages: list[Message] = field(default_factory=list)

    def get(self, message_id: str) -> Message | None:
        for message in self.messages:
            if message.id == message_id:
                return message
        return None


class _Cache:
    """Histories by (session, step), bounded; valid only while the step's revision matches."""

    def __init__(self, size: int = 2048) -> None:
        self.size = size
        self._items: OrderedDict[tuple[str, str], tuple[str, list[Message]]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[str, str], revision: str | None) -> list[Message] | None:
        with self._lock:
            item = self._items.get(key)
            if item is None or revision is None or item[0] != revision:
                return None
            self._items.move_to_end(key)
            return list(item[1])

    def put(self, key: tuple[str, str], revision: str, messages: list[Message]) -> None:
        with self._lock:
            self._items[key] = (revision, list(messages))
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)

    def advance(self, key: tuple[str, str], old: str | None, new: str, change: Any) -> None:
        """Apply our own write to the cached history, if the cache saw the state we wrote over."""
        with self._lock:
            item = self._items.get(key)
            if item is None or item[0] != old:
                self._items.pop(key, None)
                return
            self._items[key] = (new, change(list(item[1])))

    def drop(self, key: tuple[str, str]) -> None:
        with self._lock:
            self._items.pop(key, None)


class FirestoreStore:
    """The only module that knows Firestore. The client is injected (emulator in tests)."""

    def __init__(self, db: firestore.Client, timeout: float = 5.0) -> None:
        # Fail fast: a user waiting on a stream is better served by a clear 503 than by a
        # minute of client-side retries.
        self.db = db
        self.timeout = timeout
        self.cache = _Cache()
        self._owners: dict[str, str] = {}
        self.reads = 0  # counted for the benchmark: document reads issued by this process

    @property
    def _retry(self) -> Retry:
        """Retries of UNAVAILABLE and the like, all within one `timeout`."""
        return Retry(initial=0.05, maximum=0.5, multiplier=2.0, timeout=self.timeout)

    def _remember_owner(self, session_id: str, uid: str) -> None:
        """Owners never change, so they are cached; the bound keeps memory flat."""
        if len(self._owners) >= 100_000:
            self._owners.clear()
        self._owners[session_id] = uid

    # Paths ---------------------------------------------------------------------------

    def _session(self, session_id: str) -> Any:
        return self.db.collection("sessions").document(session_id)

    def _step(self, session_id: str, step_id: str) -> Any:
        return self._session(session_id).collection("steps").document(step_id)

    def _messages(self, session_id: str, step_id: str) -> Any:
        return self._step(session_id, step_id).collection("messages")

    # Reads ---------------------------------------------------------------------------

    def open(self, session_id: str, step_id: str, uid: str, fresh: bool = False) -> Conversation:
        """Check ownership and return the step's history, from memory when it is current."""
        key = (session_id, step_id)
        session_ref, step_ref = self._session(session_id), self._step(session_id, step_id)
        owner = self._owners.get(session_id)
        try:
            if owner is None:
                session, step = self.db.get_all(
                    [session_ref, step_ref], retry=self._retry, timeout=self.timeout
                )
                self.reads += 2
                if session.reference.path != session_ref.path:
                    session, step = step, session
                owner = (session.to_dict() or {}).get("ownerUid") if session.exists else None
                if owner:
                    self._remember_owner(session_id, owner)
            else:
                step = step_ref.get(retry=self._retry, timeout=self.timeout)
                self.reads += 1
        except gexc.GoogleAPIError as exc:
            raise StoreUnavailable() from exc
        if owner is not None and owner != uid:
            raise NotFound("not_found", "no such session")
        revision = (step.to_dict() or {}).get("revision") if step.exists else None
        messages = None if fresh else self.cache.get(key, revision)
        if messages is None:
            messages = self._load(session_id, step_id) if step.exists else []
            if revision:
                self.cache.put(key, revision, messages)
        return Conversation(
            session_id, step_id, uid, owner is not None, step.exists, revision, messages
        )

    def _load(self, session_id: str, step_id: str) -> list[Message]:
        query = self._messages(session_id, step_id).order_by("createdAt")
        try:
            docs = list(query.stream(retry=self._retry, timeout=self.timeout))
        except gexc.GoogleAPIError as exc:
            raise StoreUnavailable() from exc
        self.reads += max(1, len(docs))
        return [_message(d.id, d.to_dict() or {}) for d in docs]

    def reply(self, session_id: str, step_id: str, reply_id: str) -> Message | None:
        try:
            doc = (
                self._messages(session_id, step_id)
                .document(reply_id)
                .get(retry=self._retry, timeout=self.timeout)
            )
        except gexc.GoogleAPIError as exc:
            raise StoreUnavailable() from exc
        self.reads += 1
        return _message(doc.id, doc.to_dict() or {}) if doc.exists else None

    # The claim ------------------------------------------------------------------------

    def begin(
        self,
        conversation: Conversation,
        user: UserMessage,
        reply_id: str,
        mode: str,
        now: float,
        seen_reply: Message | None,
    ) -> _Claim | None:
        if mode == "new":
            return self._begin_new(conversation, user, reply_id, now)
        return self._begin_again(conversation, user, reply_id, mode, now, seen_reply)

    def _begin_new(
        self, c: Conversation, user: UserMessage, reply_id: str, now: float
    ) -> _Claim | None:
        """One atomic batch; create preconditions make a racing duplicate fail as a whole."""
        key = (c.session_id, c.step_id)
        revision, generation = uuid.uuid4().hex, uuid.uuid4().hex
        batch = self.db.batch()
        self._stamp(batch, c, now, revision)
        messages = self._messages(c.session_id, c.step_id)
        user_doc = {
            "id": user.id,
            "role": "user",
            "parts": _parts(user.text),
            "status": "complete",
            "createdAt": _ts(now),
            "updatedAt": _ts(now),
        }
        batch.create(messages.document(user.id), user_doc)
        reply_at = now + _REPLY_OFFSET
        batch.create(
            messages.document(reply_id), self._reply_doc(user.id, reply_id, reply_at, generation)
        )
        try:
            results = batch.commit(retry=self._retry, timeout=self.timeout)
        except (gexc.Conflict, gexc.NotFound):
            # AlreadyExists: a twin request won, or the session was new twice. NotFound: what
            # this instance remembered was deleted meanwhile. Either way: look again.
            self.cache.drop(key)
            self._owners.pop(c.session_id, None)
            return None
        except gexc.GoogleAPIError as exc:
            raise StoreUnavailable() from exc
        new = [
            Message(user.id, "user", user.text, "complete", now, now),
            Message(
                reply_id,
                "assistant",
                "",
                "streaming",
                reply_at,
                reply_at,
                user.id,
                generation=generation,
            ),
        ]
        self._remember_owner(c.session_id, c.uid)
        self.cache.advance(key, c.revision, revision, lambda ms: ms + new)
        if not c.step_exists:
            self.cache.put(key, revision, new)
        return _Claim(
            self,
            key,
            messages.document(reply_id),
            results[-1].update_time,
            reply_at,
            revision,
            generation,
        )

    def _begin_again(
        self,
        c: Conversation,
        user: UserMessage,
        reply_id: str,
        mode: str,
        now: float,
        seen: Message | None,
    ) -> _Claim | None:
        """Edit, regenerate or resume: a transaction, so only one of racing requests wins."""
        key = (c.session_id, c.step_id)
        messages = self._messages(c.session_id, c.step_id)
        reply_ref = messages.document(reply_id)
        stored_user = c.get(user.id)
        if stored_user is None:
            raise NotFound("message_not_found", "the message is not stored")
        # What is dropped: for an edit, everything after the user message; otherwise
        # everything after the reply (the reply itself is overwritten in place).
        anchor = stored_user if mode == "edit" else (seen or stored_user)
        doomed = [m.id for m in c.messages if m.created_at > anchor.created_at and m.id != reply_id]
        reply_at = seen.created_at if seen else stored_user.created_at + _REPLY_OFFSET
        revision, generation = uuid.uuid4().hex, uuid.uuid4().hex

        @firestore.transactional
        def claim(tx: Any) -> bool:
            snap = reply_ref.get(transaction=tx, retry=self._retry, timeout=self.timeout)
            current = snap.to_dict().get("generation") if snap.exists else None
            expected = seen.generation if seen else None
            if current != expected:
                return False
            if mode == "edit":
                tx.update(
                    messages.document(user.id),
                    {
                        "parts": _parts(user.text),
                        "updatedAt": _ts(now),
                    },
                )
            for message_id in doomed:
                tx.delete(messages.document(message_id))
            tx.set(reply_ref, self._reply_doc(user.id, reply_id, reply_at, generation))
            self._stamp(tx, c, now, revision)
            return True

        try:
            won = claim(self.db.transaction())
            if not won:
                self.cache.drop(key)
                return None
            snap = reply_ref.get(retry=self._retry, timeout=self.timeout)
        except (gexc.Conflict, gexc.NotFound):
            self.cache.drop(key)
            self._owners.pop(c.session_id, None)
            return None
        except gexc.GoogleAPIError as exc:
            raise StoreUnavailable() from exc
        if (snap.to_dict() or {}).get("generation") != generation:
            return None

        def change(ms: list[Message]) -> list[Message]:
            kept = [m for m in ms if m.id not in doomed and m.id != reply_id]
            if mode == "edit":
                kept = [replace(m, text=user.text) if m.id == user.id else m for m in kept]
            reply = Message(
                reply_id,
                "assistant",
                "",
                "streaming",
                reply_at,
                now,
                user.id,
                generation=generation,
            )
            return sorted([*kept, reply], key=lambda m: m.created_at)

        self.cache.advance(key, c.revision, revision, change)
        return _Claim(self, key, reply_ref, snap.update_time, reply_at, revision, generation)

    def _reply_doc(
        self, user_id: str, reply_id: str, created_at: float, generation: str
    ) -> dict[str, Any]:
        return {
            "id": reply_id,
            "role": "assistant",
            "parts": [],
            "status": "streaming",
            "replyTo": user_id,
            "generation": generation,
            "createdAt": _ts(created_at),
            "updatedAt": _ts(created_at),
            "finishReason": None,
            "usage": None,
            "model": None,
        }

    def _stamp(self, writer: Any, c: Conversation, now: float, revision: str) -> None:
        """Session and step bookkeeping; `createdAt` only by create, so it is written once."""
        session_ref, step_ref = self._session(c.session_id), self._step(c.session_id, c.step_id)
        if c.session_exists:
            writer.update(session_ref, {"updatedAt": _ts(now)})
        else:
            writer.create(
                session_ref,
                {
                    "ownerUid": c.uid,
                    "createdAt": _ts(now),
                    "updatedAt": _ts(now),
                },
            )
        if c.step_exists:
            writer.update(step_ref, {"updatedAt": _ts(now), "revision": revision})
        else:
            writer.create(
                step_ref,
                {
                    "createdAt": _ts(now),
                    "updatedAt": _ts(now),
                    "revision": revision,
                },
            )

    # Rate limit --------------------------------------------------------------------------

    def take_turn_token(self, uid: str, per_minute: int, now: float) -> int | None:
        """A fixed one-minute window per user, shared by every instance through Firestore."""
        ref = self.db.collection("rateLimits").document(uid)

        @firestore.transactional
        def take(tx: Any) -> int | None:
            snap = ref.get(transaction=tx, retry=self._retry, timeout=self.timeout)
            data = snap.to_dict() if snap.exists else {}
            start = float(data.get("windowStart", 0.0))
            count = int(data.get("count", 0))
            if now - start >= 60.0:
                start, count = now, 0
            if count >= per_minute:
                return max(1, int(start + 60.0 - now + 0.999))
            tx.set(ref, {"windowStart": start, "count": count + 1, "expireAt": _ts(start + 120.0)})
            return None

        # Concurrent transactions on one document abort each other: a burst of 10 parallel
        # requests from one user exhausted the 5 attempts. Serialize them within this process
        # (striped locks, so memory stays flat); across instances contention stays rare.
        lock = _RATE_LOCKS[hash(uid) % len(_RATE_LOCKS)]
        try:
            with lock:
                return take(self.db.transaction())
        except gexc.GoogleAPIError as exc:
            raise StoreUnavailable() from exc
        except ValueError:  # "failed to commit in 5 attempts": a burst, so over the limit
            return 1


class _Claim:
    """Writes to a claimed reply, each conditional on being the last writer we know of."""

    def __init__(
        self,
        store: FirestoreStore,
        key: tuple[str, str],
        ref: Any,
        update_time: Any,
        created_at: float,
        revision: str,
        generation: str,
    ) -> None:
        self.store = store
        self.key = key
        self.ref = ref
        self.update_time = update_time
        self.created_at = created_at
        self.revision = revision
        self.generation = generation
        self.settled = False
        self._lock = threading.Lock()

    def _recover(self) -> dict[str, Any]:
        """After a failed precondition: still ours, or taken over?

        The client retries a commit that timed out, and when the first attempt had landed the
        retry fails its precondition on our own write. The generation tells the two apart.
        """
        try:
            snap = self.ref.get(retry=self.store._retry, timeout=self.store.timeout)
        except gexc.GoogleAPIError as exc:
            raise StoreUnavailable() from exc
        data = snap.to_dict() if snap.exists else None
        if data is None or data.get("generation") != self.generation:
            raise LostClaim()
        self.update_time = snap.update_time
        return data

    def checkpoint(self, text: str) -> None:
        now = datetime.now(UTC)
        with self._lock:
            if self.settled:
                return
            option = self.store.db.write_option(last_update_time=self.update_time)
            try:
                result = self.ref.update(
                    {"parts": _parts(text), "updatedAt": now},
                    option=option,
                    retry=self.store._retry,
                    timeout=self.store.timeout,
                )
            except gexc.NotFound as exc:
                raise LostClaim() from exc
            except gexc.FailedPrecondition:
                self._recover()  # our own retried write landed: carry on from it
                return
            except gexc.GoogleAPIError as exc:
                raise StoreUnavailable() from exc
            self.update_time = result.update_time

    def finish(
        self,
        text: str,
        status: str,
        finish_reason: str,
        usage: dict[str, int] | None,
        model: str | None,
    ) -> None:
        db = self.store.db
        with self._lock:
            if self.settled:
                return
            now = datetime.now(UTC)
            revision = uuid.uuid4().hex
            final = {
                "parts": _parts(text),
                "status": status,
                "finishReason": finish_reason,
                "usage": usage,
                "model": model,
            }
            for attempt in range(2):
                batch = db.batch()
                batch.update(
                    self.ref,
                    {**final, "updatedAt": now},
                    option=db.write_option(last_update_time=self.update_time),
                )
                batch.update(self.ref.parent.parent, {"revision": revision, "updatedAt": now})
                try:
                    batch.commit(retry=self.store._retry, timeout=self.store.timeout)
                    break
                except gexc.NotFound as exc:
                    raise LostClaim() from exc
                except gexc.FailedPrecondition as exc:
                    stored = self._recover()
                    if all(stored.get(k) == v for k, v in final.items()):
                        break  # a retried commit of this very write had landed
                    if attempt:
                        raise LostClaim() from exc
                except gexc.GoogleAPIError as exc:
                    raise StoreUnavailable() from exc
            self.settled = True

        reply_id = self.ref.id

        def change(ms: list[Message]) -> list[Message]:
            return [
                replace(
                    m,
                    text=text,
                    status=status,
                    finish_reason=finish_reason,
                    usage=usage,
                    model=model,
                    updated_at=now.timestamp(),
                )
                if m.id == reply_id
                else m
                for m in ms
            ]

        self.store.cache.advance(self.key, self.revision, revision, change)
