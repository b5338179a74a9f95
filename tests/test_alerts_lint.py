"""`shoppulse alerts lint` passes on the shipped alerting files and points precisely at broken ones:
a rule routed to a missing contact point, a broken query, a template field no rule provides."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml
from clickhouse_connect.driver.client import Client

from checkout import ROOT
from shoppulse.ascode.alerting.files import alerting_paths
from shoppulse.ascode.alerting.lint import lint
from shoppulse.ascode.dashboards.lint import demo_database
from shoppulse.settings import load_settings

pytestmark = pytest.mark.integration
NOW = datetime.now(UTC).replace(microsecond=0)


@pytest.fixture(scope="module")
def demo() -> Iterator[Client]:
    with demo_database(load_settings(), NOW) as client:
        yield client


@pytest.fixture
def files(tmp_path: Path) -> Path:
    """A copy of the shipped alerting files to break."""
    for path in alerting_paths():
        shutil.copy(path, tmp_path / path.name)
    return tmp_path


def problems(folder: Path, client: Client) -> list[str]:
    return [str(p) for p in lint(alerting_paths(folder), client, NOW).problems]


def edit(path: Path, old: str, new: str) -> int:
    """Replace text once; the line it is on."""
    text = path.read_text()
    assert text.count(old) >= 1, old
    path.write_text(text.replace(old, new, 1))
    return text[:text.index(old)].count("\n") + 1


def test_the_cli_passes_on_the_shipped_files() -> None:
    done = subprocess.run([sys.executable, "-m", "shoppulse", "alerts", "lint"], capture_output=True, text=True,
                          timeout=300, check=False, cwd=ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "ok: 7 file(s), 8 rules" in done.stdout


def test_the_shipped_files_run_every_clickhouse_query(demo: Client) -> None:
    report = lint(alerting_paths(), demo, NOW)
    assert report.problems == []
    assert report.rules == 8
    assert report.queries_run == 10  # three for orders-below-band, two for abandonment, one each for five rules


def test_a_rule_routed_to_a_missing_contact_point_fails(files: Path, demo: Client) -> None:
    line = edit(files / "rules.yaml", "      - uid: shoppulse-payment-failure-rate\n",
                "      - uid: shoppulse-payment-failure-rate\n        notification_settings: {receiver: slack-typo}\n")
    found = problems(files, demo)
    assert any(p.startswith(f"{files / 'rules.yaml'}:{line}: rule shoppulse-payment-failure-rate")
               and "slack-typo" in p and "not a contact point" in p for p in found), found


def test_a_policy_routed_to_a_missing_contact_point_fails(files: Path, demo: Client) -> None:
    line = edit(files / "policies.yaml", "      - receiver: slack-oncall\n        object_matchers:\n          - [team",
                "      - receiver: slack-team\n        object_matchers:\n          - [team")
    found = problems(files, demo)
    assert any(p.startswith(f"{files / 'policies.yaml'}:{line}: route to slack-team") and "not a contact point" in p
               for p in found), found


def test_a_broken_query_fails_with_clickhouse_s_reason(files: Path, demo: Client) -> None:
    edit(files / "rules.yaml", "failure_rate(sum(payment_failures), sum(payment_attempts))",
         "failure_rate(sum(payment_failurez), sum(payment_attempts))")
    rule_line = next(n for n, text in enumerate((files / "rules.yaml").read_text().splitlines(), 1)
                     if "uid: shoppulse-payment-failure-rate" in text)
    found = problems(files, demo)
    assert any(p.startswith(f"{files / 'rules.yaml'}:{rule_line}: rule shoppulse-payment-failure-rate: evaluation "
                            "fails") and "payment_failurez" in p for p in found), found


def test_a_query_with_two_value_columns_fails(files: Path, demo: Client) -> None:
    edit(files / "rules.yaml", "m.failure_rate AS failure_rate\n",
         "m.failure_rate AS failure_rate, 100 * m.failure_rate AS pct\n")
    found = problems(files, demo)
    assert any("shoppulse-payment-failure-rate" in p and "2 numeric columns" in p for p in found), found


def test_a_template_field_no_rule_provides_fails(files: Path, demo: Client) -> None:
    edit(files / "templates.yaml", "{{ .Annotations.runbook_url }}", "{{ .Annotations.runbook }}")
    edit(files / "templates.yaml", "{{ .Labels.incident_severity }}", "{{ .Labels.shop }}")
    define_line = next(n for n, text in enumerate((files / "templates.yaml").read_text().splitlines(), 1)
                       if 'define "shoppulse.alert"' in text)
    found = problems(files, demo)
    assert any(p.startswith(f"{files / 'templates.yaml'}:{define_line}: template shoppulse.alert")
               and "'runbook'" in p for p in found), found
    assert any("Labels.shop" in p and "no rule gives the label 'shop'" in p for p in found), found


def test_a_field_grafana_does_not_offer_fails(files: Path, demo: Client) -> None:
    edit(files / "templates.yaml", "{{ .DashboardURL }}", "{{ .DashboardUrl }}")
    found = problems(files, demo)
    assert any("'DashboardUrl' is not a field of Grafana's alert" in p for p in found), found


def test_an_undefined_template_called_by_a_contact_point_fails(files: Path, demo: Client) -> None:
    edit(files / "contact-points.yaml", 'template "shoppulse.slack.text"', 'template "shoppulse.slack.body"')
    found = problems(files, demo)
    assert any(p.startswith(f"{files / 'contact-points.yaml'}:") and '"shoppulse.slack.body"' in p
               and "no template file defines" in p for p in found), found


def test_annotations_and_links_are_checked(files: Path, demo: Client) -> None:
    rules = yaml.safe_load((files / "rules.yaml").read_text())
    rule = rules["groups"][0]["rules"][0]
    rule["panelId"] = 99
    rule["annotations"]["runbook_url"] = "${SHOPPULSE_RUNBOOK_BASE_URL}/no-such-runbook.md"
    rule["annotations"]["observed"] = "{{ $values.Z.Value }} for {{ $labels.region }}"
    rule["data"][0]["datasourceUid"] = "no-such-datasource"
    (files / "rules.yaml").write_text(yaml.safe_dump(rules, sort_keys=False))
    found = "\n".join(problems(files, demo))
    for expected in ("panelId 99 is not a panel of shoppulse-store-live", "runbook no-such-runbook.md does not exist",
                     "$values.Z: the rule has no query 'Z'", "$labels.region: the rule has no label 'region'",
                     "datasourceUid 'no-such-datasource' is not a provisioned datasource"):
        assert expected in found, found


def test_a_misspelt_key_grafana_would_ignore_fails(files: Path, demo: Client) -> None:
    line = edit(files / "rules.yaml", "        noDataState: Alerting\n", "        noDataStat: Alerting\n")
    found = problems(files, demo)
    assert any(p.startswith(f"{files / 'rules.yaml'}:{line}: rule: unknown key 'noDataStat'") for p in found), found
