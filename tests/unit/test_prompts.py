"""A step's prompt file: its prose, and the settings block that sets its thinking budget and
narrows the board's tools; a bad block stops the start."""

from __future__ import annotations

import pytest

from workshop_chat.chat.prompts import PromptError, StepPrompt, check_all, parse, tools


def test_a_prompt_without_settings_is_its_prose():
    assert parse("x", "  Be kind.\n") == StepPrompt("Be kind.")


def test_settings_set_the_budget_and_narrow_the_tools():
    raw = "---\nthinking_budget: 0\ntools: update_board_item, add_board_items\n---\nIdeas."
    assert parse("x", raw) == StepPrompt("Ideas.", 0, ("add_board_items", "update_board_item"))
    assert parse("x", "---\ntools:\n---\nNone.").tools == ()


@pytest.mark.parametrize(
    "head",
    [
        "tools: add_board_items, delete_everything",
        "thinking_budget: lots",
        "thinking_budget: 40000",
        "temperature: 2",
        "no colon here",
    ],
)
def test_a_bad_setting_stops_the_start(head):
    with pytest.raises(PromptError):
        parse("x", f"---\n{head}\n---\nText.")
    with pytest.raises(PromptError):
        parse("x", "---\nthinking_budget: 0\nText without the closing line.")


def test_the_shipped_prompts_read_and_declare_every_tool():
    check_all()
    assert tools("empathize") is None and tools("some-other-step") is None
