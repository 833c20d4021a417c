"""The admin HTTP listener: /healthz and Prometheus /metrics that move with the mail."""

from __future__ import annotations

from harness.smtp import make_message, send

COUNTERS = ["siegel_mails_accepted_total", "siegel_recipients_delivered_total",
            "siegel_recipients_deferred_total", "siegel_recipients_bounced_total", "siegel_queue_size"]


def test_healthz(gateway):
    status, body = gateway.siegel.http_get("/healthz")
    assert status == 200
    assert body.strip() == "ok"


def test_unknown_path_is_404(gateway):
    assert gateway.siegel.http_get("/no-such-thing")[0] == 404


def test_metrics_exposes_counters_in_prometheus_format(gateway):
    status, body = gateway.siegel.http_get("/metrics")
    assert status == 200
    for name in COUNTERS:
        assert any(line.startswith(name) for line in body.splitlines()), f"{name} missing:\n{body}"
    assert "# TYPE siegel_mails_accepted_total counter" in body


def test_metrics_count_accepted_delivered_and_queue(gateway):
    g = gateway.siegel
    before = g.metrics()
    msg, _ = make_message("metrics", to="carol@partner.test")
    send(gateway.port, "alice@example.com", ["carol@partner.test", "dan@partner.test"], msg)
    gateway.outbound.wait_for(1)
    g.wait_metric("siegel_recipients_delivered_total",
                  before.get("siegel_recipients_delivered_total", 0) + 2)
    after = g.metrics()
    assert after["siegel_mails_accepted_total"] == before.get("siegel_mails_accepted_total", 0) + 1
    g.wait_queue_empty()
    assert g.metric("siegel_queue_size") == 0


def test_metrics_count_deferred_and_bounced(make_sink, make_siegel):
    inbound = make_sink("in")
    outbound = make_sink("out", script={"rcpt": {"later@partner.test": ["451 4.3.0 later", "250"],
                                                 "never@partner.test": ["550 5.1.1 unknown"]}})
    g = make_siegel(inbound=inbound, outbound=outbound, queue={"retry": ["1s"], "max_lifetime": "60s"})
    msg, _ = make_message("metrics-2", to="later@partner.test")
    send(g.smtp_port, "alice@example.com", ["later@partner.test", "never@partner.test"], msg)
    g.wait_metric("siegel_recipients_deferred_total", 1)
    g.wait_metric("siegel_recipients_bounced_total", 1)
    g.wait_metric("siegel_recipients_delivered_total", 1, timeout=30)
