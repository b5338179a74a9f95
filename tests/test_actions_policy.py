"""Action policies as reviewed files: `shoppulse actions lint` passes the shipped ones and fails
precisely (file, line, what to do) on a policy that could act unsafely."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from checkout import ROOT
from shoppulse.actions.policy import PolicyError, check_policies, load_policies
from shoppulse.devstack.process import free_port

SHIPPED = ROOT / "actions" / "payment-failover.yaml"


def lint(*paths: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "shoppulse", "actions", "lint", *map(str, paths)],
                          check=False, capture_output=True, text=True, timeout=60, cwd=ROOT)


def written(tmp_path: Path, change: str, name: str = "policy.yaml") -> Path:
    """The shipped failover policy with one edit (``change``: a small Python statement on ``p``)."""
    p = yaml.safe_load(SHIPPED.read_text())
    exec(change, {"p": p})
    path = tmp_path / name
    path.write_text(yaml.safe_dump(p, sort_keys=False))
    return path


def test_the_shipped_policies_pass_the_lint() -> None:
    result = lint()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ok: 3 file(s), 3 well-formed policies" in result.stdout
    policies = load_policies(ROOT / "actions")
    assert {p.name for p in policies} == {"payment-failover", "pause-campaign", "review-risky-orders"}
    for policy in policies:
        assert policy.mode == "dry_run" and policy.approval is not None and policy.approval.required


@pytest.mark.parametrize(("change", "line_of", "says"), [
    ("del p['rollback']", "name:", "no rollback: every action needs its inverse call and when it fires"),
    ("p['trigger']['incident_kinds'] = ['payment_failures', 'payment_outage']", "- payment_outage",
     "trigger.incident_kinds.1: unknown incident kind 'payment_outage': the sidecar's kinds are payment_failures,"),
    ("del p['limits']['per_hour']", "limits:", "no rate limit: set limits.per_hour"),
    ("del p['limits']", "name:", "no rate limit: set limits.per_hour"),
    ("p['action']['http']['body']['to'] = '{gateway}'", "to:", "unknown placeholder {gateway} in '{gateway}'"),
    ("p['conflicts_with'] = ['campaign-pause']", "- campaign-pause", "no policy named 'campaign-pause'"),
    ("p['rollback']['not_recovered_after'] = None", "when:", "not_recovered needs rollback.not_recovered_after"),
    ("p['approval']['approvers'] = []", "approvers:", "an approval needs at least one approver"),
    ("p['action']['kafka'] = {'topic': 'shop.commands'}", "action:", "needs exactly one of http"),
    ("del p['trigger']['contributor']", "trigger:", "the action names {contributor}: say which in trigger.contributor"),
    ("p['trigger']['min_duration'] = 'two minutes'", "min_duration:", "is not a duration"),
    ("p['limits']['per_hour'] = 0", "per_hour:", "greater than or equal to 1"),
    ("p['mode'] = 'yolo'", "mode:", "Input should be 'dry_run' or 'live'"),
    ("p['trigger']['countries'] = ['DE', 'XX']", "- XX", "trigger.countries.1"),
    ("p['trigger']['metrics'] = ['payment_failure_rate', 'failure_rate']", "- failure_rate",
     "trigger.metrics.1: unknown metric 'failure_rate': the sidecar's metrics are orders_per_s,"),
    ("p['trigger']['min_confidence'] = 1.5", "min_confidence:", "less than or equal to 1"),
])
def test_the_lint_names_each_unsafe_policy_its_file_and_line(tmp_path: Path, change: str, line_of: str,
                                                             says: str) -> None:
    path = written(tmp_path, change)
    result = lint(path)
    assert result.returncode == 1, result.stdout
    lines = path.read_text().splitlines()
    line = next(number for number, text in enumerate(lines, 1) if text.strip().startswith(line_of))
    [problem] = [text for text in result.stdout.splitlines() if text.startswith(f"{path}:")]
    assert problem.startswith(f"{path}:{line}: ") and says in problem, (problem, line)
    assert "1 problem(s) in 1 file(s)" in result.stderr
    with pytest.raises(PolicyError, match="1 problem"):
        load_policies(tmp_path)


def test_two_policies_may_name_each_other_as_conflicts_but_not_share_a_name(tmp_path: Path) -> None:
    written(tmp_path, "p['name'] = 'failover-a'; p['conflicts_with'] = ['failover-b']", "a.yaml")
    written(tmp_path, "p['name'] = 'failover-b'; p['conflicts_with'] = ['failover-a']", "b.yaml")
    policies, problems = check_policies(sorted(tmp_path.glob("*.yaml")))
    assert problems == [] and [p.name for p in policies] == ["failover-a", "failover-b"]
    written(tmp_path, "p['name'] = 'failover-a'", "c.yaml")
    _, problems = check_policies(sorted(tmp_path.glob("*.yaml")))
    assert [str(p) for p in problems] == [f"{tmp_path / 'c.yaml'}:1: name: 'failover-a' is also the name of the "
                                          f"policy in {tmp_path / 'a.yaml'}"]


def test_a_file_that_is_not_yaml_or_not_there_is_one_clear_line(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: x\ntrigger: [unclosed\n")
    result = lint(broken)
    assert result.returncode == 1 and f"{broken}:3: file: while parsing" in result.stdout, result.stdout
    result = lint(tmp_path / "absent.yaml")
    assert result.returncode == 2 and "no such policy file" in result.stderr


def test_the_processor_refuses_to_start_on_what_it_cannot_do_live(tmp_path: Path, kafka_bootstrap: str) -> None:
    """A live policy sending Kafka commands to a topic the cluster does not have, or live policies without
    the shop's admin API configured: one line saying what to change, before anything runs."""
    home = tmp_path / "home"
    (home / "actions").mkdir(parents=True)
    command = "{'kafka': {'topic': 'shop.commands', 'message': {'country': '{country}'}}}"
    written(home / "actions", f"p['mode'] = 'live'; p['action'] = {command}; p['trigger']['contributor'] = None; "
                              f"p['rollback'] = {{'when': ['incident_resolved'], **{command}}}")
    env = {**os.environ, "SHOPPULSE_HOME": str(home), "SHOPPULSE_ACTIONS_METRICS_PORT": str(free_port()),
           "SHOPPULSE_ACTIONS_WEBHOOK_PORT": str(free_port()), "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap}
    run = subprocess.run([sys.executable, "-m", "shoppulse", "actions", "run"], capture_output=True, text=True,
                         timeout=60, env=env, check=False)
    assert run.returncode == 1 and "the command topics shop.commands do not exist on the Kafka cluster" in run.stderr
    written(home / "actions", "p['mode'] = 'live'")
    run = subprocess.run([sys.executable, "-m", "shoppulse", "actions", "run"], capture_output=True, text=True,
                         timeout=60, env=env, check=False)
    assert run.returncode == 1 and "set SHOPPULSE_SHOP_ADMIN_URL and SHOPPULSE_SHOP_ADMIN_TOKEN" in run.stderr
