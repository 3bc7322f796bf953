"""PromQL of the dashboard and the alert rules, traffic that makes every series they read, and
a real Prometheus to run them.

`dashboard_queries` and `rule_queries` read the queries from deploy/grafana and
deploy/prometheus, and `selectors` parses one with promql-parser. `StackTraffic` sends rounds of
requests, generations, webhooks and failures to a live app that runs the gemini backend (on the
fake Gemini API) and billing (on the fake Stripe API). After a round, the app's /metrics has a
series for every selector. `PrometheusServer` runs Debian's Prometheus on 127.0.0.1 and queries
its HTTP API.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import promql_parser
import yaml
from billing_support import BillingHarness, open_harness, sync_stripe, with_services
from conftest import add_plan, bearer, create_account_key, create_key

from app.settings import Settings
from fakes.gemini_api import FakeGeminiAPI, blocked_prompt, rate_limited, server_error
from fakes.stripe_api import FakeStripeAPI, event, sign

# A fresh Prometheus reports its first `up == 1` after about 5 to 6 s, even when it scrapes
# every second.
PROMETHEUS_WAIT_S = 20.0
PROMETHEUS_POLL_S = 0.25

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "deploy/grafana/dashboards/visioncraft.json"
RULES = ROOT / "deploy/prometheus/rules"
GENERATIONS = "/api/v1/images/generations"
PORTAL = "/api/v1/billing/portal"
STRIPE_PORTAL_SESSIONS = "/v1/billing_portal/sessions"
# Prompts that the fake Gemini API fails, and the error code that clients then get.
BUSY_PROMPT = "a busy harbour"  # HTTP 429: backend_rate_limited
BROKEN_PROMPT = "a broken bridge"  # HTTP 500: backend_error
BLOCKED_PROMPT = "a forbidden door"  # a safety block: content_policy_violation
# The estimated upstream cost of one 4K image in the settings that `StackTraffic` expects. It is
# above DAILY_SPEND_CAP_USD, so every 4K request is rejected at the cap.
COST_OF_4K_IMAGE_USD = 10.0
DAILY_SPEND_CAP_USD = 5.0


@dataclass(frozen=True)
class Query:
    """One PromQL expression and where it comes from (a panel or an alert)."""

    source: str
    expr: str

    def with_range(self, rate_window: str, time_range: str) -> str:
        """Return the expression with Grafana's range variables replaced.

        `$__rate_interval` and `$__interval` become `rate_window`, and `$__range` (the
        dashboard's time range) becomes `time_range`.
        """
        return (
            self.expr.replace("$__rate_interval", rate_window)
            .replace("$__interval", rate_window)
            .replace("$__range", time_range)
        )


def dashboard_panels(path: Path = DASHBOARD) -> list[dict[str, Any]]:
    """Return every panel of the dashboard, the panels inside collapsed rows too."""
    panels: list[dict[str, Any]] = []
    for panel in json.loads(path.read_text())["panels"]:
        panels.append(panel)
        panels.extend(panel.get("panels", []))
    return panels


def dashboard_queries(path: Path = DASHBOARD) -> list[Query]:
    return [
        Query(f"panel {panel['title']!r} target {target['refId']}", target["expr"])
        for panel in dashboard_panels(path)
        for target in panel.get("targets", [])
    ]


def alert_rules(folder: Path = RULES) -> Iterator[tuple[Path, dict[str, Any]]]:
    """Yield each alert rule with the file it is in."""
    for path in sorted(folder.glob("*.yml")):
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                if "alert" in rule:
                    yield path, rule


def rule_queries(folder: Path = RULES) -> list[Query]:
    return [Query(f"alert {rule['alert']}", rule["expr"]) for _, rule in alert_rules(folder)]


def selectors(expr: str) -> list[promql_parser.VectorSelector]:
    """Parse `expr` and return its vector selectors, in the order they appear."""
    found: list[promql_parser.VectorSelector] = []
    pending: list[Any] = [promql_parser.parse(expr)]
    while pending:
        node = pending.pop()
        if isinstance(node, promql_parser.VectorSelector):
            found.append(node)
        elif isinstance(node, promql_parser.MatrixSelector):
            found.append(node.vector_selector)
        elif isinstance(node, promql_parser.BinaryExpr):
            pending += [node.rhs, node.lhs]
        elif isinstance(node, promql_parser.Call):
            pending += reversed(node.args)
        elif isinstance(node, promql_parser.AggregateExpr):
            pending += [node.expr] + ([node.param] if node.param is not None else [])
        elif isinstance(
            node, promql_parser.ParenExpr | promql_parser.UnaryExpr | promql_parser.SubqueryExpr
        ):
            pending.append(node.expr)
    return found


def selector_name(selector: promql_parser.VectorSelector) -> str:
    if selector.name:
        return str(selector.name)
    names = [m.value for m in selector.matchers.matchers if m.name == "__name__"]
    assert names, f"selector {selector} has no metric name"
    return str(names[0])


def exact_matchers(selector: promql_parser.VectorSelector) -> dict[str, str]:
    """Return the `label="value"` matchers of a selector, without the metric name."""
    return {
        matcher.name: matcher.value
        for matcher in selector.matchers.matchers
        if matcher.op == promql_parser.MatchOp.Equal and matcher.name != "__name__"
    }


def regex_matchers(selector: promql_parser.VectorSelector) -> dict[str, re.Pattern[str]]:
    """Return the `label=~"regex"` matchers of a selector, anchored as PromQL anchors them."""
    return {
        matcher.name: re.compile(f"^(?:{matcher.value})$")
        for matcher in selector.matchers.matchers
        if matcher.op == promql_parser.MatchOp.Re
    }


def stack_settings(base: Settings) -> dict[str, object]:
    """Return the settings that `StackTraffic` expects, to override those of `base`."""
    return {
        "image_backend": "gemini",
        "daily_spend_cap_usd": DAILY_SPEND_CAP_USD,
        "upstream_cost_per_image_usd": {
            **base.upstream_cost_per_image_usd,
            "4K": COST_OF_4K_IMAGE_USD,
        },
    }


class StackTraffic:
    """Sends the requests behind every series of the dashboard and the alerts to a live app.

    The app must run with `stack_settings`, the gemini backend on `gemini` and billing on
    `stripe`. Each round sends generations that succeed, spend credits, get refunded, are
    rate-limited by the backend, fail upstream, are blocked, lack credits and hit the spend cap.
    It also makes a 404. On the billing side, a new buyer pays a subscription invoice, fails
    another and buys a credit pack. Then come a webhook with a bad signature, one whose
    processing fails, and a Stripe API call that fails.
    """

    def __init__(
        self, client: httpx.Client, settings: Settings, gemini: FakeGeminiAPI, stripe: FakeStripeAPI
    ) -> None:
        self.client = client
        self.settings = settings
        self.stripe = stripe
        gemini.reply_when_prompt_contains(BUSY_PROMPT, rate_limited(retry_delay="1s"))
        gemini.reply_when_prompt_contains(BROKEN_PROMPT, server_error())
        gemini.reply_when_prompt_contains(BLOCKED_PROMPT, blocked_prompt())
        # The local account has no credit limit; the buyers of each round have credits.
        self.auth = bearer(create_key(settings))
        add_plan(settings, "empty", monthly_credits=0)
        _, broke_token = create_account_key(settings, "broke@example.com", plan="empty")
        self.broke_auth = bearer(broke_token)
        with_services(settings, sync_stripe)

    def send_round(self) -> None:
        # A buyer of its own for each round, because an account subscribes only once.
        buyer = open_harness(self.client, self.settings, self.stripe, synced=True)
        self._bill(buyer)
        self._generate(buyer.buyer.auth)

    def send_rate_limited(self, count: int) -> None:
        """Send `count` generations that the backend rejects with HTTP 429."""
        for _ in range(count):
            self._expect(GENERATIONS, {"prompt": BUSY_PROMPT}, self.auth, 429)

    def _generate(self, buyer_auth: dict[str, str]) -> None:
        for body, auth, status in (
            ({"prompt": "a kite"}, buyer_auth, 200),
            ({"prompt": BROKEN_PROMPT}, buyer_auth, 502),
            ({"prompt": "a lantern"}, self.auth, 200),
            ({"prompt": BUSY_PROMPT}, self.auth, 429),
            ({"prompt": BLOCKED_PROMPT}, self.auth, 422),
            ({"prompt": "a kite"}, self.broke_auth, 402),
            ({"prompt": "a poster", "image_size": "4K"}, self.auth, 503),
        ):
            self._expect(GENERATIONS, body, auth, status)
        assert self.client.get("/no/such/page").status_code == 404

    def _bill(self, billing: BillingHarness) -> None:
        _, _, invoice = billing.subscribe("pro")
        for payload, status in (
            (event("invoice.paid", invoice), 200),
            (event("invoice.payment_failed", {**invoice, "status": "open"}), 200),
            (event("checkout.session.completed", billing.pay_pack("small")), 200),
            (event("checkout.session.completed", _unknown_buyer(billing.pay_pack("small"))), 503),
        ):
            response = billing.deliver(payload)[0]
            assert response.status_code == status, response.text
        forged = sign(event("invoice.paid", invoice), secret="whsec_forged")
        assert billing.post_signed(forged).status_code == 400
        billing.fake.fail_next(STRIPE_PORTAL_SESSIONS, 500)
        self._expect(PORTAL, None, billing.buyer.auth, 503)

    def _expect(
        self, path: str, body: dict[str, Any] | None, auth: dict[str, str], status: int
    ) -> None:
        response = self.client.post(path, json=body, headers=auth)
        assert response.status_code == status, response.text


def _unknown_buyer(session: dict[str, Any]) -> dict[str, Any]:
    """Return the paid session as if another service had made it: it names no known account."""
    metadata = {**session["metadata"], "account_id": "acct_unknown"}
    return {
        **session,
        "client_reference_id": "acct_unknown",
        "customer": None,
        "metadata": metadata,
    }


class PrometheusServer:
    """The Prometheus `binary` on 127.0.0.1 with a given configuration, its data in `folder`."""

    def __init__(self, binary: str, config: Path, folder: Path, port: int) -> None:
        self.base_url = f"http://127.0.0.1:{port}"
        self.log = folder / "prometheus.log"
        self._command = [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={folder / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ]
        self._process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> PrometheusServer:
        with self.log.open("wb") as log:
            self._process = subprocess.Popen(self._command, stdout=log, stderr=log)
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._process is not None:
            self._process.terminate()
            self._process.wait(timeout=10)

    def get(self, path: str, **params: str) -> Any:
        """Return the `data` of a response of the HTTP API, or None when it is not up yet."""
        try:
            response = httpx.get(f"{self.base_url}{path}", params=params, timeout=5)
        except httpx.TransportError:
            return None
        assert response.status_code == 200, f"{path} {params}: {response.text}"
        return response.json()["data"]

    def query(self, promql: str) -> list[dict[str, Any]]:
        """Run an instant query; return its result, empty while Prometheus is starting."""
        data = self.get("/api/v1/query", query=promql)
        return [] if data is None else list(data["result"])

    def wait_for(self, promql: str, timeout_s: float = PROMETHEUS_WAIT_S) -> list[dict[str, Any]]:
        """Return the first non-empty result of `promql` within `timeout_s`, else the last one."""
        deadline = time.monotonic() + timeout_s
        result = self.query(promql)
        while not result and time.monotonic() < deadline:
            time.sleep(PROMETHEUS_POLL_S)
            result = self.query(promql)
        return result

    def firing_alerts(self) -> dict[str, list[dict[str, str]]]:
        """Return the labels of each firing alert, by alert name."""
        data = self.get("/api/v1/alerts") or {"alerts": []}
        firing: dict[str, list[dict[str, str]]] = {}
        for alert in data["alerts"]:
            if alert["state"] == "firing":
                firing.setdefault(alert["labels"]["alertname"], []).append(alert["labels"])
        return firing

    def log_tail(self, lines: int = 20) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
