"""``shoppulse actions run``: the actions processor's loop, with Prometheus metrics and structured logs."""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime

from clickhouse_connect.driver.exceptions import Error as ClickHouseError
from prometheus_client import Counter

from shoppulse import clickhouse
from shoppulse.actions.commands import KafkaCommandSender
from shoppulse.actions.endpoint import Endpoint, serve
from shoppulse.actions.execute import ShopAdminClient
from shoppulse.actions.policy import load_policies
from shoppulse.actions.processor import ActionsProcessor
from shoppulse.actions.slack import SlackApprovals
from shoppulse.actions.webhook import WebhookAuth
from shoppulse.project_files import actions_dir
from shoppulse.redact import redact_url
from shoppulse.settings import Settings
from shoppulse.streaming import ProcessorStartError, serve_metrics

log = logging.getLogger(__name__)

PASSES = Counter("shoppulse_actions_passes", "Passes of the actions processor over incidents and actions", ["result"])


def run(settings: Settings, stop: threading.Event) -> None:
    """Move every action one step on each ``SHOPPULSE_ACTIONS_INTERVAL_S`` until ``stop`` is set."""
    policies = load_policies(actions_dir())
    live = [p.name for p in policies if p.mode == "live"]
    calling = [p.name for p in policies if p.mode == "live" and (p.action.http or (p.rollback and p.rollback.http))]
    if calling and not (settings.shop_admin_url and settings.shop_admin_token):
        raise ProcessorStartError(f"the live policies {', '.join(calling)} call the shop's admin API: set "
                                  "SHOPPULSE_SHOP_ADMIN_URL and SHOPPULSE_SHOP_ADMIN_TOKEN, or make them mode: dry_run")
    topics = sorted({c.kafka.topic for p in policies if p.mode == "live"
                     for c in (p.action, p.rollback) if c is not None and c.kafka is not None})
    commands = KafkaCommandSender(settings.kafka_bootstrap) if topics else None
    if commands is not None:
        try:
            missing = commands.missing_topics(topics)
        except ConnectionError as exc:
            raise ProcessorStartError(f"live policies send Kafka commands, but {exc}: check KAFKA_BOOTSTRAP_SERVERS "
                                      f"({settings.kafka_bootstrap})") from exc
        if missing:
            raise ProcessorStartError(f"the command topics {', '.join(missing)} do not exist on the Kafka cluster: "
                                      "create them (the shop's services consume them), or fix the policies")
    shop = None
    if settings.shop_admin_url and settings.shop_admin_token:
        shop = ShopAdminClient(settings.shop_admin_url, settings.shop_admin_token)
    serve_metrics(settings.actions_metrics_port, settings.host, "SHOPPULSE_ACTIONS_METRICS_PORT")
    log.info("actions starting", extra={"policies": [p.name for p in policies], "live": live,
                                        "shop": redact_url(settings.shop_admin_url or "-"),
                                        "kill_switch": settings.actions_kill_switch})
    slack = slack_approvals(settings)
    client = clickhouse.connect(settings)
    processor = ActionsProcessor(client, policies, shop, settings.actions_kill_switch, slack, commands)
    wake = threading.Event()  # a Grafana notification asks for a pass now
    auth = WebhookAuth(settings.actions_webhook_secret, user=settings.actions_webhook_user,
                       password=settings.actions_webhook_password)
    endpoint = Endpoint(client, policies, auth, lambda _incidents: wake.set(), slack, settings.actions_link_secret)
    try:
        webhook = serve(endpoint, settings.host, settings.actions_webhook_port)
    except OSError as exc:
        raise ProcessorStartError(f"cannot take Grafana's webhook notifications on {settings.host}:"
                                  f"{settings.actions_webhook_port} ({exc.strerror}): set "
                                  "SHOPPULSE_ACTIONS_WEBHOOK_PORT to a free port") from exc
    needing = [p.name for p in policies if p.mode == "live" and p.approval and p.approval.required]
    if needing and slack is None:
        log.warning("live policies need approval but Slack is not configured (SLACK_BOT_TOKEN, SLACK_SIGNING_SECRET, "
                    "SHOPPULSE_ACTIONS_SLACK_CHANNEL): approvers answer with shoppulse actions approve|reject or "
                    "signed links (shoppulse actions link)", extra={"policies": needing})
    if not auth.configured:
        log.warning("SHOPPULSE_ACTIONS_WEBHOOK_SECRET (or _USER and _PASSWORD) is not set: Grafana's webhook "
                    "notifications are refused; the processor still acts on the incidents table")
    try:
        _loop(processor, settings, stop, wake)
    finally:
        webhook.shutdown()
        webhook.server_close()
    log.info("actions stopped")


def slack_approvals(settings: Settings) -> SlackApprovals | None:
    """Slack for approval requests, when its bot token and channel are set (its signing secret is what
    lets the button clicks in; without it they are refused and the CLI and links still answer)."""
    if not (settings.slack_bot_token and settings.actions_slack_channel):
        return None
    return SlackApprovals(settings.slack_bot_token, settings.actions_slack_channel, settings.slack_signing_secret,
                          settings.slack_api_url)


def _loop(processor: ActionsProcessor, settings: Settings, stop: threading.Event, wake: threading.Event) -> None:
    while not stop.is_set():
        try:
            processor.step(datetime.now(UTC))
            PASSES.labels("ok").inc()
        except ClickHouseError as exc:  # the next pass takes the same steps again: nothing is lost
            PASSES.labels("failed").inc()
            log.warning("actions pass failed", extra={"error": str(exc).splitlines()[0][:300]})
        wake.wait(settings.actions_interval_s)
        wake.clear()
