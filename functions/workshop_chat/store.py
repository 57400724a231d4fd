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
from .domain import (
    FileRef,
    LostClaim,
    Message,
    NotFound,
    Source,
    StoreUnavailable,
    UserMessage,
)
from .memory import Outcome
from .reply import LOST, STOP, UNSTORED, WROTE

# The reply sorts right after its user message, whatever the clocks of other instances say.
_REPLY_OFFSET = 0.001
_RATE_LOCKS = tuple(threading.Lock() for _ in range(64))
# Writes to a session's documents (the session, its steps) from this process go one at a time,
# each conditional on the version the last one left: this process's own claims, finals and
# summaries then never fail each other's preconditions. Striped, so memory stays flat.
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


def _parts(
    text: str, reasoning: str = "", sources: tuple[Source, ...] = ()
) -> list[dict[str, str]]:
    """A message's parts as the AI SDK names them: thoughts, the answer, then its sources."""
    parts = [{"type": "reasoning", "text": reasoning}] if reasoning else []
    if text:
        parts.append({"type": "text", "text": text})
    for s in sources:
        source = {"type": "source-url", "sourceId": s.source_id, "url": s.url}
        if s.title:
            source["title"] = s.title
        parts.append(source)
    return parts


def _user_parts(user: UserMessage) -> list[dict[str, Any]]:
    """The text, then a reference for each file: type, name, size, object path, hash."""
    parts: list[dict[str, Any]] = list(_parts(user.text))
    for ref in user.files:
        parts.append(
            {
                "type": "file",
                "n": ref.n,
                "mediaType": ref.media_type,
                "filename": ref.filename,
                "size": ref.size,
                "sha256": ref.sha256,
                "path": ref.path,
            }
        )
    return parts


def _file_refs(parts: Any) -> tuple[FileRef, ...]:
    if not isinstance(parts, list):
        return ()
    return tuple(
        FileRef(
            int(p.get("n", 0)),
            str(p.get("mediaType", "")),
            str(p.get("filename", "")),
            int(p.get("size", 0)),
            str(p.get("sha256", "")),
            str(p.get("path", "")),
        )
        for p in parts
        if isinstance(p, dict) and p.get("type") == "file" and p.get("path")
    )


def _reasoning(parts: Any) -> str:
    if not isinstance(parts, list):
        return ""
    return "".join(
        p.get("text", "") for p in parts if isinstance(p, dict) and p.get("type") == "reasoning"
    )


def _sources(parts: Any) -> tuple[Source, ...]:
    if not isinstance(parts, list):
        return ()
    return tuple(
        Source(str(p.get("sourceId", "")), str(p.get("url", "")), p.get("title"))
        for p in parts
        if isinstance(p, dict) and p.get("type") == "source-url"
    )


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
    # What the session's steps found (their outcome summaries), as of `session_version`.
    outcomes: dict[str, Outcome] = field(default_factory=dict)
    session_version: datetime | None = None

    def get(self, message_id: str) -> Message | None:
        for message in self.messages:
            if message.id == message_id:
                return message
        return None


History = tuple[datetime, list[Message]]
# What the cache holds per step: the version, the messages, and the step's `revision` token.
_Entry = tuple[datetime, list[Message], str | None]


class _Cache:
    """Histories by (session, step), bounded; each valid at the step version it records."""

    def __init__(self, size: int = 2048) -> None:
        self.size = size
        self._items: OrderedDict[tuple[str, str], _Entry] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[str, str]) -> History | None:
        with self._lock:
            item = self._items.get(key)
            if item is not None:
                self._items.move_to_end(key)
                return item[0], list(item[1])
            return None

    def put(
        self,
        key: tuple[str, str],
        version: datetime,
        messages: list[Message],
        revision: str | None,
    ) -> None:
        with self._lock:
            self._items[key] = (version, list(messages), revision)
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)

    def version(self, key: tuple[str, str]) -> datetime | None:
        with self._lock:
            item = self._items.get(key)
            return item[0] if item else None

    def revision(self, key: tuple[str, str]) -> str | None:
        with self._lock:
            item = self._items.get(key)
            return item[2] if item else None

    def advance(
        self,
        key: tuple[str, str],
        old: datetime | None,
        new: datetime,
        change: Callable[[list[Message]], list[Message]],
        revision: str | None = None,
    ) -> None:
        """Apply our own write, made with `old` as its precondition, to the cached history
        (`revision`: the token the write stored, if it stored one)."""
        with self._lock:
            item = self._items.get(key)
            if item is None or old is None or item[0] != old:
                self._items.pop(key, None)
                return
            self._items[key] = (new, change(list(item[1])), revision or item[2])

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
    removed: tuple[str, ...] = ()  # messages an edit or regenerate deleted (their files go too)


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
        self._sessions: dict[str, tuple[datetime, dict[str, Outcome]]] = {}
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

    def session_lock(self, session_id: str) -> threading.Lock:
        """Held from reading a session's cached state to committing a write on it."""
        return _STEP_LOCKS[hash(session_id) % len(_STEP_LOCKS)]

    def _forget(self, key: tuple[str, str]) -> None:
        self.cache.drop(key)
        self._owners.pop(key[0], None)
        self._sessions.pop(key[0], None)

    def _remember_session(self, snap: Any) -> None:
        """The session document's outcomes mirror, with the version it was read or written at."""
        if len(self._sessions) >= 10_000:
            self._sessions.clear()
        self._sessions[snap.id] = (snap.update_time, _outcomes(snap.to_dict() or {}))

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
            reasoning=_reasoning(data.get("parts")),
            sources=_sources(data.get("parts")),
            files=_file_refs(data.get("parts")),
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
        session_state = self._sessions.get(session_id)
        if cached is not None and session_state is not None:
            if owner != uid:
                raise NotFound("not_found", "no such session")
            version, outcomes = session_state
            return Conversation(
                session_id, step_id, uid, True, True, cached[0], cached[1], outcomes, version
            )
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
        data = (session.to_dict() or {}) if session.exists else {}
        owner = data.get("ownerUid")
        if (owner is not None and owner != uid) or data.get("deleting"):
            raise NotFound("not_found", "no such session")
        if owner:
            self._remember_owner(session_id, owner)
            self._remember_session(session)
        messages = self._load(session_id, step_id) if step.exists else []
        version = step.update_time if step.exists else None
        if version is not None and owner:
            self.cache.put(key, version, messages, (step.to_dict() or {}).get("revision"))
        return Conversation(
            session_id,
            step_id,
            uid,
            owner is not None,
            step.exists,
            version,
            messages,
            _outcomes(data),
            session.update_time if session.exists else None,
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
        revision = self._stamp(batch, c, now)
        messages = self._messages(c.session_id, c.step_id)
        batch.create(
            messages.document(user.id),
            {
                "id": user.id,
                "role": "user",
                "parts": _user_parts(user),
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
        session_version = results[0].update_time
        step_version, reply_version = results[1].update_time, results[-1].update_time
        self._sessions[c.session_id] = (session_version, c.outcomes)
        new = [
            Message(user.id, "user", user.text, "complete", now, now, files=user.files),
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
            self.cache.advance(key, c.version, step_version, lambda ms: ms + new, revision)
        else:
            self.cache.put(key, step_version, new, revision)
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
                    messages.document(user.id), {"parts": _user_parts(user), "updatedAt": _ts(now)}
                )
            for message_id in doomed:
                tx.delete(messages.document(message_id))
            tx.set(reply_ref, self._reply_doc(user.id, reply_id, reply_at, generation))
            self._stamp(tx, c, now, conditional=False)
            return True

        # The history changes under a transaction whose write times it does not return:
        # the next turn reads it again.
        self.cache.drop(key)
        self._sessions.pop(c.session_id, None)
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
        return Claim(key, reply_ref, snap.update_time, reply_at, generation, tuple(doomed))

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

    def _stamp(self, writer: Any, c: Conversation, now: float, conditional: bool = True) -> str:
        """Session and step bookkeeping; `createdAt` only by create, so it is written once.
        Returns the step's new `revision`."""
        session_ref, step_ref = self._session(c.session_id), self._step(c.session_id, c.step_id)
        stamp = {"updatedAt": _ts(now), "revision": uuid.uuid4().hex}
        if c.session_exists and conditional and c.session_version is not None:
            option = self.db.write_option(last_update_time=c.session_version)
            writer.update(session_ref, {"updatedAt": _ts(now)}, option=option)
        elif c.session_exists:
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
        return stamp["revision"]

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
                    _STEP_LOCKS.index(self.session_lock(w.claim.key[0]))  # type: ignore[attr-defined]
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
                fields["parts"] = _parts(write.text, write.reasoning, write.sources)
            if write.ending is not None:
                fields.update(self._final_fields(write.ending))
                steps.setdefault(claim.key, []).append((claim, write))
            option = self.db.write_option(last_update_time=claim.update_time)
            batch.update(claim.ref, fields, option=option)
        versions: dict[tuple[str, str], datetime | None] = {}
        revisions: dict[tuple[str, str], str] = {}
        for key in steps:
            versions[key] = self.cache.version(key)
            revisions[key] = uuid.uuid4().hex
            stamp = {"updatedAt": now, "revision": revisions[key]}
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
                change = _finals(landed)
                self.cache.advance(key, versions[key], result.update_time, change, revisions[key])
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

    # Step outcomes ------------------------------------------------------------------------

    def step_for_summary(
        self, session_id: str, step_id: str
    ) -> tuple[list[Message], str | None, str | None]:
        """The step's whole conversation, its last summary and the revision they are at: from
        memory when this instance knows them (no read), else read."""
        key = (session_id, step_id)
        cached, revision = self.cache.get(key), self.cache.revision(key)
        session_state = self._sessions.get(session_id)
        if cached is not None and revision and session_state is not None:
            previous = session_state[1].get(step_id)
            return cached[1], previous.summary if previous else None, revision
        try:
            step = self._step(session_id, step_id).get(retry=self._retry, timeout=self.timeout)
        except gexc.GoogleAPIError as exc:
            raise StoreUnavailable() from exc
        self.reads += 1
        if not step.exists:
            return [], None, None
        data = step.to_dict() or {}
        return self._load(session_id, step_id), data.get("summary"), data.get("revision")

    def save_summary(
        self, session_id: str, step_id: str, summary: str, revision: str, started_at: float
    ) -> None:
        """On the step (what the rules let the owner read) and mirrored on the session (what a
        turn reads with no extra round trip), in one batch conditional on what this instance
        knows of both, so its own caches stay valid; unconditional if they are stale."""
        key = (session_id, step_id)
        now = datetime.now(UTC)
        outcome = Outcome(step_id, summary, started_at)
        mirror = {"summary": summary, "updatedAt": now, "startedAt": _ts(started_at)}
        step_fields = {"summary": summary, "summaryUpdatedAt": now, "summarizedRevision": revision}
        with self.session_lock(session_id):
            step_version = self.cache.version(key)
            session_state = self._sessions.get(session_id)
            for conditional in (True, False):
                batch = self.db.batch()
                option = (
                    self.db.write_option(last_update_time=step_version)
                    if conditional and step_version
                    else None
                )
                batch.update(self._step(*key), step_fields, option=option)
                session_option = (
                    self.db.write_option(last_update_time=session_state[0])
                    if conditional and session_state
                    else None
                )
                path = self.db.field_path("outcomes", step_id)
                batch.update(self._session(session_id), {path: mirror}, option=session_option)
                try:
                    results = batch.commit(retry=self._retry, timeout=self.timeout)
                except gexc.FailedPrecondition:
                    self.cache.drop(key)
                    self._sessions.pop(session_id, None)
                    continue
                except gexc.NotFound:
                    return  # the session was deleted meanwhile
                except gexc.GoogleAPIError as exc:
                    raise StoreUnavailable() from exc
                if conditional and step_version:
                    self.cache.advance(key, step_version, results[0].update_time, lambda m: m)
                if conditional and session_state:
                    outcomes = {**session_state[1], step_id: outcome}
                    self._sessions[session_id] = (results[1].update_time, outcomes)
                return

    # The whole session ----------------------------------------------------------------------

    def _owned_session(self, session_id: str, uid: str) -> Any:
        try:
            snap = self._session(session_id).get(retry=self._retry, timeout=self.timeout)
        except gexc.GoogleAPIError as exc:
            raise StoreUnavailable() from exc
        self.reads += 1
        data = snap.to_dict() or {} if snap.exists else {}
        if not snap.exists or data.get("ownerUid") != uid:
            raise NotFound("not_found", "no such session")
        return snap

    def overview(self, session_id: str, uid: str) -> list[dict[str, Any]]:
        """Each step with messages: its summary, when it was made, its size and last change."""
        snap = self._owned_session(session_id, uid)
        if (snap.to_dict() or {}).get("deleting"):
            raise NotFound("not_found", "no such session")
        steps = []
        try:
            for step in (
                self._session(session_id)
                .collection("steps")
                .stream(retry=self._retry, timeout=self.timeout)
            ):
                count = (
                    self._messages(session_id, step.id)
                    .count()
                    .get(retry=self._retry, timeout=self.timeout)
                )
                data = step.to_dict() or {}
                steps.append(
                    {
                        "stepId": step.id,
                        "summary": data.get("summary"),
                        "summaryUpdatedAt": _seconds(data.get("summaryUpdatedAt")) or None,
                        "messageCount": int(count[0][0].value),
                        "updatedAt": _seconds(data.get("updatedAt")),
                        "startedAt": _seconds(data.get("createdAt")),
                    }
                )
                self.reads += 2
        except gexc.GoogleAPIError as exc:
            raise StoreUnavailable() from exc
        return [s for s in steps if s["messageCount"]]

    def mark_deleting(self, session_id: str, uid: str) -> None:
        """The first step of a delete, for the owner only (also of a session half deleted):
        turns elsewhere fail their precondition on the session and then read it as gone, so
        nothing new lands while its files and documents go."""
        snap = self._owned_session(session_id, uid)
        try:
            snap.reference.update({"deleting": True}, retry=self._retry, timeout=self.timeout)
        except gexc.GoogleAPIError as exc:
            raise StoreUnavailable() from exc

    def delete_session(self, session_id: str, uid: str, batch_size: int = 400) -> int:
        """Every message, step and summary of the session, in batches; the session document
        goes last, so an interrupted delete is finished by the next one. Returns the number
        of documents deleted."""
        snap = self._owned_session(session_id, uid)
        session_ref = snap.reference
        deleted = 0
        try:
            for step in session_ref.collection("steps").stream(
                retry=self._retry, timeout=self.timeout
            ):
                messages = step.reference.collection("messages")
                while True:
                    docs = list(messages.limit(batch_size).stream(retry=self._retry))
                    if not docs:
                        break
                    batch = self.db.batch()
                    for doc in docs:
                        batch.delete(doc.reference)
                    batch.commit(retry=self._retry, timeout=self.timeout)
                    deleted += len(docs)
                step.reference.delete(retry=self._retry, timeout=self.timeout)
                self.cache.drop((session_id, step.id))
                deleted += 1
            session_ref.delete(retry=self._retry, timeout=self.timeout)
        except gexc.GoogleAPIError as exc:
            raise StoreUnavailable() from exc
        self._owners.pop(session_id, None)
        self._sessions.pop(session_id, None)
        return deleted + 1

    def step_ids(self, session_id: str) -> list[str]:
        try:
            refs = self._session(session_id).collection("steps").list_documents()
            return [ref.id for ref in refs]
        except gexc.GoogleAPIError as exc:
            raise StoreUnavailable() from exc

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


def _outcomes(session: dict[str, Any]) -> dict[str, Outcome]:
    found = session.get("outcomes")
    if not isinstance(found, dict):
        return {}
    return {
        step: Outcome(step, str(o.get("summary") or ""), _seconds(o.get("startedAt")))
        for step, o in found.items()
        if isinstance(o, dict) and o.get("summary")
    }


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
                    reasoning=write.reasoning,
                    sources=write.sources,
                    status=e.status,
                    finish_reason=e.finish_reason,
                    usage=e.usage,
                    model=e.model,
                )
            out.append(m)
        return out

    return change


__all__ = ["Claim", "Conversation", "FirestoreStore", "LostClaim"]
