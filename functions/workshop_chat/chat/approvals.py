"""The team's answers to a reply's approval requests, checked against what is stored: exactly
the requests pending on the step's last message, each answered once. A stale, forged or
repeated answer is refused before anything is written or asked."""

from __future__ import annotations

from .domain import Approval, UserMessage
from .errors import Conflict, NotFound
from .generation import Carry
from .ports import Conversation


def carried(conversation: Conversation, approval: Approval) -> tuple[UserMessage, Carry]:
    """The user message the reply answers, and the reply with the team's answers."""
    reply = conversation.get(approval.reply_id)
    if reply is None or reply.role != "assistant":
        raise NotFound("message_not_found", "no reply with that id in this step")
    pending = {
        c.approval_id: c
        for c in reply.tools
        if c.state == "approval-requested" and c.approval_id is not None
    }
    answers = {a.approval_id: a for a in approval.answers}
    last = conversation.messages[-1].id if conversation.messages else None
    stored_user = conversation.get(reply.reply_to or "")
    if (
        not pending
        or set(answers) != set(pending)
        or len(answers) != len(approval.answers)
        or reply.status != "complete"
        or last != reply.id
        or stored_user is None
    ):
        raise Conflict("approval_not_pending", "that reply is not waiting for these answers")
    decided = tuple((call, answers[i].approved, answers[i].reason) for i, call in pending.items())
    user = UserMessage(stored_user.id, stored_user.text, stored_user.files)
    return user, Carry(reply, decided)
