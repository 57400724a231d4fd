"""Firestore: where messages live, and how a reply is claimed, checkpointed and finished.

Layout: sessions/{sessionId}/steps/{stepId}/messages/{messageId}. Every write that changes a
step's history also writes the step document, so the step's update time is the history's
version. An instance keeps histories in memory with the version it knows, and its next write
to the step carries that version as a precondition: the warm path reads nothing, and a failed
precondition means someone else wrote, so the history is read again.
"""

from __future__ import annotations

import contextlib
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from google.api_core import exceptions as gexc
from google.api_core.retry import Retry
from google.cloud import firestore
from google.cloud.firestore_v1.base_query import FieldFilter
from google.cloud.firestore_v1.bulk_batch import BulkWriteBatch

from .checkpoints import ReplyWrite
from .domain import LostClaim, Message, NotFound, StoreUnavailable, UserMessage
from .reply import LOST, STOP, UNSTORED, WROTE

# The reply sorts right after its user message, whatever the clocks of other instances say.
_REPLY_OFFSET = 0.001
_RATE_LOCKS = tuple(threading.Lock() for _ in range(64))
# Writes to a step's document from this process go one at a time, each conditional on the
# version the last one left: this process's own claims and finals then never fail each other's
# preconditions. Striped, so memory stays flat.
_STEP_LOCKS = tuple(threading.Lock() for _ in range(64))
_OK, _NOT_FOUND, _FAILED_PRECONDITION = 0, 5, 9
_MAX_BATCH = 500  # BatchWrite's limit


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


def _parts(text: str) -> list[dict[str, str]]:
    return [{"type": "text", "text": text}] if text else []


@dataclass
class Conversation:
    """One step's history as of `version` (the step document's update time), oldest first."""

    session_id: str
    step_id: str
    uid: str
    session_exists: bool
    step_exists: bool
    version: datetime | None
    messages: list[Message] = field(default_factory=list)

    def get(self, message_id: str) -> Message | None:
        for message in self.messages:
            if message.id == message_id:
                return message
        return None


History = tuple[datetime, list[Message]]


class _Cache:
    """Histories by (session, step), bounded; each valid at the step version it records."""

    def __init__(self, size: int = 2048) -> None:
        self.size = size
        self._items: OrderedDict[tuple[str, str], History] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[str, str]) -> History | None:
        with self._lock:
            item = self._items.get(key)
            if item is not None:
                self._items.move_to_end(key)
                return item[0], list(item[1])
            return None

    def put(self, key: tuple[str, str], version: datetime, messages: list[Message]) -> None:
        with self._lock:
            self._items[key] = (version, list(messages))
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)

    def version(self, key: tuple[str, str]) -> datetime | None:
        with self._lock:
            item = self._items.get(key)
            return item[0] if item else None

    def advance(
        self,
        key: tuple[str, str],
        old: datetime | None,
        new: datetime,
        change: Callable[[list[Message]], list[Message]],
    ) -> None:
        """Apply our own write, made with `old` as its precondition, to the cached history."""
        with self._lock:
            item = self._items.get(key)
            if item is None or old is None or item[0] != old:
                self._items.pop(key, None)
                return
            self._items[key] = (new, change(list(item[1])))

    def drop(self, key: tuple[str, str]) -> None:
        with self._lock:
            self._items.pop(key, None)


@dataclass
class Claim:
    """A reply this process generates; its writes are conditional on its last known write."""

    key: tuple[str, str]
    ref: Any
    update_time: Any
    created_at: float
    generation: str


class FirestoreStore:
    """The only module that knows Firestore. The client is injected (emulator in tests)."""

    def __init__(
        self, db: firestore.Client, lease_seconds: float = 8.0, timeout: float = 5.0
    ) -> None:
        self.db = db
        self.lease_seconds = lease_seconds
        # Fail fast: a user waiting on a stream is better served by a clear 503 than by a
        # minute of client-side retries.
        self.timeout = timeout
        self.cache = _Cache()
        self._owners: dict[str, str] = {}
        self.reads = 0  # document reads issued by this process (tests, benchmark)

    @property
    def _retry(self) -> Retry:
        """Retries of UNAVAILABLE and the like, all within one `timeout`."""
        return Retry(initial=0.05, maximum=0.5, multiplier=2.0, timeout=self.timeout)

    def _remember_owner(self, session_id: str, uid: str) -> None:
        """Owners never change, so they are cached; the bound keeps memory flat."""
        if len(self._owners) >= 100_000:
            self._owners.clear()
        self._owners[session_id] = uid

    def step_lock(self, key: tuple[str, str]) -> threading.Lock:
        """Held from reading a step's cached history to committing a claim on it."""
        return _STEP_LOCKS[hash(key) % len(_STEP_LOCKS)]

    def _forget(self, key: tuple[str, str]) -> None:
        self.cache.drop(key)
        self._owners.pop(key[0], None)

    def _session(self, session_id: str) -> Any:
        return self.db.collection("sessions").document(session_id)

    def _step(self, session_id: str, step_id: str) -> Any:
        return self._session(session_id).collection("steps").document(step_id)

    def _messages(self, session_id: str, step_id: str) -> Any:
        return self._step(session_id, step_id).collection("messages")

    def _message(self, snap: Any) -> Message:
        data = snap.to_dict() or {}
        status = data.get("status", "complete")
        lapsed = False
        if status == "streaming" and snap.read_time and snap.update_time:
            # Server times on both sides: no instance's clock decides whether a lease lapsed.
            age = (snap.read_time - snap.update_time).total_seconds()
            lapsed = age > self.lease_seconds
        return Message(
            id=snap.id,
            role=data.get("role", "user"),
            text=_text(data.get("parts")),
            status=status,
            created_at=_seconds(data.get("createdAt")),
            updated_at=_seconds(data.get("updatedAt")),
            reply_to=data.get("replyTo"),
            finish_reason=data.get("finishReason"),
            usage=data.get("usage"),
            model=data.get("model"),
            generation=data.get("generation"),
            lapsed=lapsed,
            version=snap.update_time,
        )

    # Reads ---------------------------------------------------------------------------

    def open(self, session_id: str, step_id: str, uid: str, fresh: bool = False) -> Conversation:
        """Check ownership and return the step's history: from memory when this instance
        knows it (no read at all), else read and remembered."""
        key = (session_id, step_id)
        owner = self._owners.get(session_id)
        cached = None if fresh or owner is None else self.cache.get(key)
        if cached is not None:
            if owner != uid:
                raise NotFound("not_found", "no such session")
            return Conversation(session_id, step_id, uid, True, True, cached[0], cached[1])
        session_ref, step_ref = self._session(session_id), self._step(session_id, step_id)
        try:
            session, step = self.db.get_all(
                [session_ref, step_ref], retry=self._retry, timeout=self.timeout
            )
            self.reads += 2
            if session.reference.path != session_ref.path:
                session, step = step, session
        except gexc.GoogleAPIError as exc:
            raise StoreUnavailable() from exc
        owner = (session.to_dict() or {}).get("ownerUid") if session.exists else None
        if owner is not None and owner != uid:
            raise NotFound("not_found", "no such session")
        if owner:
            self._remember_owner(session_id, owner)
        messages = self._load(session_id, step_id) if step.exists else []
        version = step.update_time if step.exists else None
        if version is not None and owner:
            self.cache.put(key, version, messages)
        return Conversation(
            session_id, step_id, uid, owner is not None, step.exists, version, messages
        )

    def _load(self, session_id: str, step_id: str) -> list[Message]:
        query = self._messages(session_id, step_id).order_by("createdAt")
        try:
            docs = list(query.stream(retry=self._retry, timeout=self.timeout))
        except gexc.GoogleAPIError as exc:
            raise StoreUnavailable() from exc
        self.reads += max(1, len(docs))
        return [self._message(d) for d in docs]

    def reply(self, session_id: str, step_id: str, reply_id: str) -> Message | None:
        try:
            snap = (
                self._messages(session_id, step_id)
                .document(reply_id)
                .get(retry=self._retry, timeout=self.timeout)
            )
        except gexc.GoogleAPIError as exc:
            raise StoreUnavailable() from exc
        self.reads += 1
        return self._message(snap) if snap.exists else None

    # The claim ------------------------------------------------------------------------

    def begin(
        self,
        conversation: Conversation,
        user: UserMessage,
        reply_id: str,
        mode: str,
        now: float,
        seen_reply: Message | None,
    ) -> Claim | None:
        """Store the user message and claim the reply; None when a racing write won.

        `mode` is new (both created), edit (user updated, later messages deleted),
        regenerate (later messages deleted) or resume (reply missing, failed or lapsed).
        Outside `new`, the claim holds only if the reply is still as `seen_reply` shows it.
        """
        if mode == "new":
            return self._begin_new(conversation, user, reply_id, now)
        return self._begin_again(conversation, user, reply_id, mode, now, seen_reply)

    def _begin_new(
        self, c: Conversation, user: UserMessage, reply_id: str, now: float
    ) -> Claim | None:
        """One atomic batch. Create preconditions make a racing duplicate fail as a whole, and
        the step's update precondition fails it when this instance's history was stale."""
        key = (c.session_id, c.step_id)
        generation = uuid.uuid4().hex
        batch = self.db.batch()
        self._stamp(batch, c, now)
        messages = self._messages(c.session_id, c.step_id)
        batch.create(
            messages.document(user.id),
            {
                "id": user.id,
                "role": "user",
                "parts": _parts(user.text),
                "status": "complete",
                "createdAt": _ts(now),
                "updatedAt": _ts(now),
            },
        )
        reply_at = now + _REPLY_OFFSET
        batch.create(
            messages.document(reply_id), self._reply_doc(user.id, reply_id, reply_at, generation)
        )
        try:
            results = batch.commit(retry=self._retry, timeout=self.timeout)
        except (gexc.Conflict, gexc.NotFound, gexc.FailedPrecondition, gexc.Aborted):
            # AlreadyExists: a twin request won. NotFound or FailedPrecondition: what this
            # instance remembered is out of date. Aborted: contention. Either way: look again.
            self._forget(key)
            return None
        except gexc.GoogleAPIError as exc:
            raise StoreUnavailable() from exc
        step_version, reply_version = results[1].update_time, results[-1].update_time
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
        if c.step_exists:
            self.cache.advance(key, c.version, step_version, lambda ms: ms + new)
        else:
            self.cache.put(key, step_version, new)
        return Claim(key, messages.document(reply_id), reply_version, reply_at, generation)

    def _begin_again(
        self,
        c: Conversation,
        user: UserMessage,
        reply_id: str,
        mode: str,
        now: float,
        seen: Message | None,
    ) -> Claim | None:
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
        generation = uuid.uuid4().hex
        # Taking over a lapsed reply: only if nobody wrote it since it was seen lapsed.
        unchanged_since = seen.version if seen is not None and seen.lapsed else None

        @firestore.transactional
        def claim(tx: Any) -> bool:
            snap = reply_ref.get(transaction=tx, retry=self._retry, timeout=self.timeout)
            current = snap.to_dict().get("generation") if snap.exists else None
            if current != (seen.generation if seen else None):
                return False
            if unchanged_since is not None and snap.update_time != unchanged_since:
                return False
            if mode == "edit":
                tx.update(
                    messages.document(user.id), {"parts": _parts(user.text), "updatedAt": _ts(now)}
                )
            for message_id in doomed:
                tx.delete(messages.document(message_id))
            tx.set(reply_ref, self._reply_doc(user.id, reply_id, reply_at, generation))
            self._stamp(tx, c, now, conditional=False)
            return True

        # The history changes under a transaction whose write times it does not return:
        # the next turn reads it again.
        self.cache.drop(key)
        try:
            if not claim(self.db.transaction()):
                return None
            snap = reply_ref.get(retry=self._retry, timeout=self.timeout)
        except (gexc.Conflict, gexc.NotFound):
            self._forget(key)
            return None
        except gexc.GoogleAPIError as exc:
            raise StoreUnavailable() from exc
        if (snap.to_dict() or {}).get("generation") != generation:
            return None
        return Claim(key, reply_ref, snap.update_time, reply_at, generation)

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
            "lease": _ts(created_at + self.lease_seconds),
            "stopRequested": False,
            "finishReason": None,
            "usage": None,
            "model": None,
        }

    def _stamp(self, writer: Any, c: Conversation, now: float, conditional: bool = True) -> None:
        """Session and step bookkeeping; `createdAt` only by create, so it is written once."""
        session_ref, step_ref = self._session(c.session_id), self._step(c.session_id, c.step_id)
        stamp = {"updatedAt": _ts(now), "revision": uuid.uuid4().hex}
        if c.session_exists:
            writer.update(session_ref, {"updatedAt": _ts(now)})
        else:
            writer.create(
                session_ref, {"ownerUid": c.uid, "createdAt": _ts(now), "updatedAt": _ts(now)}
            )
        if not c.step_exists:
            writer.create(step_ref, {"createdAt": _ts(now), **stamp})
        elif conditional and c.version is not None:
            writer.update(step_ref, stamp, option=self.db.write_option(last_update_time=c.version))
        else:
            writer.update(step_ref, stamp)

    def streaming(self, session_id: str, step_id: str) -> list[Message]:
        """The step's replies being generated now (or whose instance died: `lapsed`)."""
        query = self._messages(session_id, step_id).where(
            filter=FieldFilter("status", "==", "streaming")
        )
        try:
            docs = list(query.stream(retry=self._retry, timeout=self.timeout))
        except gexc.GoogleAPIError as exc:
            raise StoreUnavailable() from exc
        self.reads += max(1, len(docs))
        return sorted((self._message(d) for d in docs), key=lambda m: m.created_at)

    def request_stop(self, session_id: str, step_id: str, reply_id: str) -> bool:
        """Ask the instance generating a reply to stop: its next write finds this and stops.

        A plain update, no precondition: it changes the document under the generation, whose
        next conditional write then fails, reads the document, and sees the request.
        """
        ref = self._messages(session_id, step_id).document(reply_id)
        try:
            ref.update({"stopRequested": True}, retry=self._retry, timeout=self.timeout)
        except gexc.NotFound:
            return False
        except gexc.GoogleAPIError as exc:
            raise StoreUnavailable() from exc
        return True

    # Checkpoints, leases and finals, many replies in one RPC -----------------------------

    def write_replies(self, writes: list[ReplyWrite]) -> list[str]:
        outcomes: list[str] = []
        for start in range(0, len(writes), _MAX_BATCH // 2):
            chunk = writes[start : start + _MAX_BATCH // 2]
            stripes = sorted(
                {
                    _STEP_LOCKS.index(self.step_lock(w.claim.key))  # type: ignore[attr-defined]
                    for w in chunk
                    if w.ending is not None
                }
            )
            with contextlib.ExitStack() as held:
                for stripe in stripes:  # in order: two holders never wait on each other
                    held.enter_context(_STEP_LOCKS[stripe])
                outcomes += self._write_batch(chunk)
        return outcomes

    def _write_batch(self, writes: list[ReplyWrite]) -> list[str]:
        now = datetime.now(UTC)
        lease = now + timedelta(seconds=self.lease_seconds)
        batch = BulkWriteBatch(self.db)
        steps: dict[tuple[str, str], list[tuple[Claim, ReplyWrite]]] = {}
        for write in writes:
            claim: Claim = write.claim  # type: ignore[assignment]
            fields: dict[str, Any] = {"updatedAt": now, "lease": lease}
            if write.text is not None:
                fields["parts"] = _parts(write.text)
            if write.ending is not None:
                fields.update(self._final_fields(write.ending))
                steps.setdefault(claim.key, []).append((claim, write))
            option = self.db.write_option(last_update_time=claim.update_time)
            batch.update(claim.ref, fields, option=option)
        versions: dict[tuple[str, str], datetime | None] = {}
        for key in steps:
            versions[key] = self.cache.version(key)
            stamp = {"updatedAt": now, "revision": uuid.uuid4().hex}
            option = self.db.write_option(last_update_time=versions[key]) if versions[key] else None
            batch.update(self._step(*key), stamp, option=option)
        try:
            response = batch.commit(retry=self._retry, timeout=self.timeout)
        except gexc.GoogleAPIError:
            return [UNSTORED] * len(writes)
        results, statuses = list(response.write_results), list(response.status)
        outcomes = [self._outcome(w, results[i], statuses[i]) for i, w in enumerate(writes)]
        position = {id(w): i for i, w in enumerate(writes)}
        stale = []
        for offset, (key, finals) in enumerate(steps.items()):
            status, result = statuses[len(writes) + offset], results[len(writes) + offset]
            if status.code == _OK and versions[key] is not None:
                landed = [(c, w) for c, w in finals if outcomes[position[id(w)]] == WROTE]
                self.cache.advance(key, versions[key], result.update_time, _finals(landed))
            elif status.code != _OK:
                stale.append(key)
        self._bump(stale, now)
        return outcomes

    def _outcome(self, write: ReplyWrite, result: Any, status: Any) -> str:
        claim: Claim = write.claim  # type: ignore[assignment]
        if status.code == _OK:
            claim.update_time = result.update_time
            return WROTE
        if status.code == _NOT_FOUND:
            return LOST
        if status.code != _FAILED_PRECONDITION:
            return UNSTORED
        # The client retries an RPC that timed out, and when the first attempt had landed the
        # retry fails its precondition on our own write. The generation tells the two apart.
        try:
            snap = claim.ref.get(retry=self._retry, timeout=self.timeout)
        except gexc.GoogleAPIError:
            return UNSTORED
        data = snap.to_dict() if snap.exists else None
        if data is None or data.get("generation") != claim.generation:
            return LOST
        claim.update_time = snap.update_time
        if write.ending is None and data.get("stopRequested"):
            return STOP
        if write.ending is not None:
            final = self._final_fields(write.ending)
            if all(data.get(k) == v for k, v in final.items()) and _text(data.get("parts")) == (
                write.text or ""
            ):
                return WROTE
        return UNSTORED  # ours still: the next attempt carries the precondition it needs

    def _final_fields(self, ending: Any) -> dict[str, Any]:
        return {
            "status": ending.status,
            "finishReason": ending.finish_reason,
            "usage": ending.usage,
            "model": ending.model,
        }

    def _bump(self, keys: list[tuple[str, str]], now: datetime) -> None:
        """A step written meanwhile by someone else: still tell other instances it changed."""
        for key in keys:
            self.cache.drop(key)
            # If this fails too, other instances keep a stale copy until the step's next write.
            with contextlib.suppress(gexc.GoogleAPIError):
                self._step(*key).update(
                    {"updatedAt": now, "revision": uuid.uuid4().hex},
                    retry=self._retry,
                    timeout=self.timeout,
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


def _finals(landed: list[tuple[Claim, ReplyWrite]]) -> Callable[[list[Message]], list[Message]]:
    """The cached history after these finals: each reply's text and end, as stored."""
    done = {c.ref.id: w for c, w in landed}

    def change(messages: list[Message]) -> list[Message]:
        out = []
        for m in messages:
            write = done.get(m.id)
            if write is not None and write.ending is not None:
                e = write.ending
                m = replace(
                    m,
                    text=write.text or "",
                    status=e.status,
                    finish_reason=e.finish_reason,
                    usage=e.usage,
                    model=e.model,
                )
            out.append(m)
        return out

    return change


__all__ = ["Claim", "Conversation", "FirestoreStore", "LostClaim"]
