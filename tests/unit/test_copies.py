"""A process's copy of a step: what a look must read to bring it up to date, and its bounds."""

from __future__ import annotations

from workshop_chat.chat.domain import RECENT, Message
from workshop_chat.firestore.copies import Copy, HistoryCache, brought_up
from workshop_chat.firestore.documents import StepHead


def msg(mid: str, at: float, text: str = "t", status: str = "complete", seq: int = 0) -> Message:
    return Message(mid, "user", text, status, at, at, seq=seq)


def copy_of(*messages: Message, seq: int = 4, cuts: int = 0) -> Copy:
    return Copy("inc", seq, cuts, tuple(messages))


def test_a_step_that_did_not_move_needs_nothing_read():
    step = StepHead(seq=4, recent=((3, "u2"), (4, "r2")))
    assert step.changed_since(4) == []


def test_what_moved_is_read_by_id_while_the_head_remembers_it_and_by_number_beyond():
    last = 4 + RECENT
    recent = tuple((n, f"m{n}") for n in range(5, last + 1))  # the last RECENT numbers taken
    step = StepHead(seq=last, recent=recent)
    assert step.changed_since(last - 3) == [f"m{n}" for n in range(last - 2, last + 1)]
    assert step.changed_since(4) == [f"m{n}" for n in range(5, last + 1)]
    assert step.changed_since(3) is None  # 4 was taken and has left `recent`: query
    # ... for what `recent` has forgotten alone, when what it remembers was read by id.
    assert step.remembered == (5, [f"m{n}" for n in range(5, last + 1)])
    assert StepHead(seq=3).remembered == (4, [])
    # A regenerate takes one number, an edit two: gaps are fine.
    gappy = StepHead(seq=9, recent=((5, "u"), (6, "r"), (8, "r")))
    assert gappy.changed_since(6) == ["r"]
    stored = StepHead(recent=recent).recent_after((last + 1, "x"))
    assert stored.split()[::2] == [str(n) for n in range(6, last + 2)]
    assert stored.endswith(f"{last + 1} x")


def test_new_and_changed_messages_merge_in_creation_order():
    copy = copy_of(msg("u1", 1.0), msg("r1", 1.1, "", "streaming"))
    read = [msg("r1", 1.1, "done"), msg("u2", 2.0), msg("r2", 2.1)]
    merged = brought_up(copy, read, set(), 0, 0.0)
    assert [(m.id, m.text) for m in merged] == [
        ("u1", "t"),
        ("r1", "done"),
        ("u2", "t"),
        ("r2", "t"),
    ]


def test_a_cut_drops_what_came_after_it_unless_it_was_read_again():
    copy = copy_of(msg("u1", 1.0), msg("r1", 1.1), msg("u2", 2.0), msg("r2", 2.1))
    # u1 was edited: everything after it went, and its reply was claimed again.
    read = [msg("u1", 1.0, "edited"), msg("r1", 1.1, "", "streaming")]
    merged = brought_up(copy, read, set(), cuts=1, cut_after=1.0)
    assert [(m.id, m.text) for m in merged] == [("u1", "edited"), ("r1", "")]


def test_an_unfinished_reply_read_as_missing_is_gone():
    copy = copy_of(msg("u1", 1.0), msg("r1", 1.1, "", "streaming"))
    assert [m.id for m in brought_up(copy, [], {"r1"}, 0, 0.0)] == ["u1"]
    assert copy.unfinished == ["r1"]


def test_the_cache_is_bounded_by_count_and_by_bytes():
    cache = HistoryCache(count=2, size_bytes=10_000)
    for key in ("a", "b", "c"):
        cache.put((key, "s"), copy_of(msg("u", 1.0)))
    assert cache.get(("a", "s")) is None and cache.get(("c", "s")) is not None
    big = copy_of(msg("u", 1.0, "x" * 6000))
    cache.put(("d", "s"), big)
    cache.put(("e", "s"), big)  # two of them do not fit: the older goes
    assert cache.get(("d", "s")) is None and cache.get(("e", "s")) is big
    cache.put(("f", "s"), copy_of(msg("u", 1.0, "x" * 20_000)))  # larger than the whole cache
    assert cache.get(("f", "s")) is None


def test_our_own_final_settles_the_copy_without_a_read():
    cache = HistoryCache()
    cache.put(("s", "t"), copy_of(msg("u1", 1.0), msg("r1", 1.1, "", "streaming")))
    cache.settle(("s", "t"), "r1", text="final", status="complete")
    settled = cache.get(("s", "t"))
    assert settled is not None
    assert [(m.text, m.status) for m in settled.messages][1] == ("final", "complete")
    assert settled.unfinished == []


def test_a_hint_reads_ahead_what_the_copy_lacks_for_those_who_could_write_in_the_step():
    copy = Copy("inc", 4, 0, (msg("u1", 1.0), msg("r1", 1.1)), frozenset({"ann"}))
    seen = ["u1", "r1", "u2", "r2", "u2"]
    assert copy.ahead(seen, "ann") == ["u2", "r2"]
    # A stranger's hint is read for nothing: the look reads the head alone for them.
    assert copy.ahead(seen, "eve") == []
    # No more than a head remembers: the oldest of a longer gap are left to the look.
    gap = [f"m{i}" for i in range(RECENT + 10)]
    assert copy.ahead(gap, "ann") == gap[-RECENT:]


def test_a_writer_a_look_refused_is_forgotten_in_the_copy_held_now():
    cache = HistoryCache()
    key = ("s", "t")
    cache.put(key, Copy("inc", 2, 0, (msg("u1", 1.0),), frozenset({"ann", "bob"})))
    # Another thread's look put a newer copy in meanwhile: the refusal changes that one.
    cache.put(key, Copy("inc", 4, 0, (msg("u1", 1.0), msg("u2", 2.0)), frozenset({"ann", "bob"})))
    cache.forget_writer(key, "bob")
    held = cache.get(key)
    assert held is not None and (held.seq, held.writers) == (4, frozenset({"ann"}))
    assert held.ahead(["u3"], "bob") == []
