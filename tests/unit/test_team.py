"""The team's rules: who may do what, and what an invite, a code and a name may be."""

from __future__ import annotations

import pytest

from workshop_chat.chat.errors import Forbidden, InvalidRequest
from workshop_chat.chat.ports import SessionView
from workshop_chat.chat.team import (
    Member,
    check_code,
    check_name,
    check_role,
    code_hash,
    must_own,
    must_write,
    new_code,
)


def test_roles_come_from_the_session_as_it_is():
    session = SessionView(
        True, "alice", members=(Member("carol", "C", "member"), Member("dave", "D", "viewer"))
    )
    assert [session.role_of(u) for u in ("alice", "carol", "dave", "erin")] == [
        "owner",
        "member",
        "viewer",
        None,
    ]
    assert SessionView(False, "alice").role_of("alice") is None


def test_viewers_read_members_write_owners_own():
    for role in ("owner", "member", None):
        must_write(role)  # None: the caller's access is checked before (404)
    with pytest.raises(Forbidden):
        must_write("viewer")
    must_own("owner")
    for role in ("member", "viewer"):
        with pytest.raises(Forbidden):
            must_own(role)


def test_codes_are_random_and_stored_only_as_hashes():
    one, two = new_code(), new_code()
    assert one != two and check_code(one) == one and len(code_hash(one)) == 64
    assert code_hash(one) == code_hash(one) != code_hash(two)


@pytest.mark.parametrize("raw", [None, 3, "short", "x" * 65, "é" * 20])
def test_a_bad_code_is_refused(raw):
    with pytest.raises(InvalidRequest):
        check_code(raw)


def test_roles_and_names_are_checked():
    assert check_role("viewer") == "viewer"
    with pytest.raises(InvalidRequest):
        check_role("owner")  # an invite never makes an owner
    assert check_name(None) == "" and check_name(" Carol ") == "Carol"
    for bad in (3, "x" * 81, "a\x00b", "\ud800"):
        with pytest.raises(InvalidRequest):
            check_name(bad)
