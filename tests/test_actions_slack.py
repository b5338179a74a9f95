"""The Slack side of approvals against the Slack stand-in: what Slack refuses is refused with what to
do, a long story still makes a valid request, and the stand-in refuses what Block Kit refuses."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
import yaml

from checkout import ROOT
from shoppulse.actions.audit import ActionState
from shoppulse.actions.decide import IncidentFacts
from shoppulse.actions.policy import Policy
from shoppulse.actions.slack import InteractionError, SlackApprovals, SlackError, parse_click, request_blocks
from shoppulse.devstack.slack_standin import BlockError, check_blocks, slack_standin

POLICY = Policy.model_validate(yaml.safe_load((ROOT / "actions" / "payment-failover.yaml").read_text()))
NOW = datetime(2026, 12, 4, 16, 0, tzinfo=UTC)
CALL = {"http": {"method": "POST", "path": "/admin/payments/failover", "body": {"country": "BR"}}}
ACTION = ActionState(uuid.uuid4(), POLICY.name, uuid.uuid4(), "BR", "live", (("proposed", NOW, "shoppulse"),),
                     CALL, CALL)


def incident(story: str) -> IncidentFacts:
    return IncidentFacts(ACTION.incident_id, "payment_failures", ("BR",), "critical", NOW, None, story=story)


def test_what_slack_refuses_is_refused_with_what_to_do() -> None:
    with slack_standin("xoxb-right", "secret", {"C0OK": True, "C0OUT": False}, {"S0PAYMENTS": ["U1"]}) as (api, state):
        def ask(token: str = "xoxb-right", channel: str = "C0OK") -> dict[str, str]:
            return SlackApprovals(token, channel, "secret", api).ask(ACTION, POLICY, incident("story"), "16:15 UTC")

        assert ask() == {"channel": "C0OK", "ts": next(iter(state.messages))[1]} and state.warnings == []
        refusals = [({"channel": "C0GONE"}, "names no channel"), ({"channel": "C0OUT"}, "invite the bot"),
                    ({"token": "xoxb-wrong"}, "not a valid bot token"), ({"token": ""}, "set SLACK_BOT_TOKEN")]
        for kwargs, says in refusals:
            with pytest.raises(SlackError, match=says):
                ask(**kwargs)
        state.rate_limit_next = 1
        with pytest.raises(SlackError, match=r"rate-limits chat\.postMessage"):
            ask()
        slack = SlackApprovals("xoxb-right", "C0OK", "secret", api)
        assert slack.qualifies("U1", ["S0PAYMENTS"]) == "S0PAYMENTS" and slack.qualifies("U2", ["S0PAYMENTS"]) is None
        assert slack.qualifies("U2", ["U2", "S0PAYMENTS"]) == "U2"
        state.scopes.discard("usergroups:read")
        with pytest.raises(SlackError, match="usergroups:read"):
            slack.qualifies("U1", ["S0PAYMENTS"])


def test_a_long_story_still_makes_a_request_slack_takes() -> None:
    blocks = request_blocks(ACTION, POLICY, incident("x" * 5000), "16:15 UTC")
    check_blocks(blocks)
    assert max(len(b["text"]["text"]) for b in blocks if b["type"] == "section") == 3000


def _button(**overrides: Any) -> list[dict[str, Any]]:
    button = {"type": "button", "action_id": "a", "text": {"type": "plain_text", "text": "Approve"}, **overrides}
    return [{"type": "actions", "elements": [button]}]


@pytest.mark.parametrize("blocks", [
    _button(text={"type": "plain_text", "text": "x" * 76}),
    _button(style="green"),
    _button(value="v" * 2001),
    [*_button(), *_button()],  # the same action_id twice
    [{"type": "divider"}] * 51,
    [{"type": "header", "text": {"type": "mrkdwn", "text": "a header is plain text"}}],
    [{"type": "section", "text": {"type": "mrkdwn", "text": "s" * 3001}}],
    [{"type": "video"}],
])
def test_the_stand_in_refuses_what_block_kit_refuses(blocks: list[dict[str, Any]]) -> None:
    with pytest.raises(BlockError):
        check_blocks(blocks)


@pytest.mark.parametrize("body", [b"", b"payload=not-json", b'payload={"type":"view_submission"}',
                                  b'payload={"type":"block_actions","actions":[]}', b"\xff\xfe"])
def test_what_is_not_a_click_on_our_buttons_is_refused(body: bytes) -> None:
    with pytest.raises(InteractionError) as refused:
        parse_click(body)
    assert refused.value.status == 400
