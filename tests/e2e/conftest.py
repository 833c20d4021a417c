"""Fixtures for the end-to-end tests: real `siegel` processes, recording
sinks, certificates, a private Postfix.

Every process a test starts is stopped at teardown, and when a test fails
the tail of each gateway's stderr log is attached to the report, so a CI
failure shows what Siegel said, not just what the client saw.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from harness import certs
from harness.postfix import Postfix
from harness.scanners import Clamd, Spamd
from harness.siegel import Siegel, base_config, deep_merge
from harness.sinkctl import Sink

REPO = Path(__file__).resolve().parents[2]


def _siegel_bin() -> Path:
    env = os.environ.get("SIEGEL_BIN")
    if env:
        p = Path(env)
        return p if p.is_absolute() else (Path.cwd() / p)
    target = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
    if not target.is_absolute():
        target = REPO / target
    return target / "debug" / "siegel"


@pytest.fixture(scope="session")
def siegel_bin() -> str:
    p = _siegel_bin()
    if not p.exists():
        pytest.fail(f"siegel binary not found at {p}: build it (cargo build -p siegel) or set SIEGEL_BIN",
                    pytrace=False)
    return str(p.resolve())


@pytest.fixture(scope="session")
def pki(tmp_path_factory):
    """A test CA, a sink certificate it signed, and an untrusted self-signed one."""
    d = tmp_path_factory.mktemp("pki")
    ca = certs.make_ca(d)
    names = ["sink.test", "secure.example", "trusted.example", "untrusted.example", "tls.example"]
    return {
        "ca": ca,
        "leaf": certs.make_leaf(d, "sink", ca, names),
        "selfsigned": certs.make_self_signed(d, "selfsigned", names),
    }


@pytest.fixture
def make_sink(tmp_path):
    """make_sink(name, tls=None|CertPair, script=None, start=True) -> Sink."""
    sinks: list[Sink] = []

    def factory(name: str = "sink", *, tls=None, script: dict | None = None, start: bool = True,
                port: int | None = None) -> Sink:
        s = Sink(tmp_path / f"sink-{name}-{len(sinks)}", cert=tls, script=script, name=name, port=port)
        sinks.append(s)
        if start:
            s.start()
        return s

    yield factory
    for s in sinks:
        s.stop()


@pytest.fixture
def make_siegel(request, tmp_path, siegel_bin):
    """make_siegel(inbound=Sink|addr, outbound=Sink|addr, start=True, **config overrides)."""
    gateways: list[Siegel] = []
    request.node._siegels = gateways

    def factory(*, inbound, outbound, start: bool = True, name: str | None = None, **over) -> Siegel:
        inbound_addr = inbound.addr if isinstance(inbound, Sink) else inbound
        outbound_addr = outbound.addr if isinstance(outbound, Sink) else outbound
        work = tmp_path / (name or f"siegel{len(gateways)}")
        cfg = base_config(work, inbound=inbound_addr, outbound=outbound_addr)
        cfg = deep_merge(cfg, over)
        g = Siegel(siegel_bin, work, cfg)
        gateways.append(g)
        if start:
            g.start()
        return g

    yield factory
    for g in gateways:
        g.stop()


class Gateway:
    """The common set-up: Siegel with a sink for internal mail (inbound
    relay, receives mail for example.com and DSNs to example.com senders)
    and a sink for everything else (outbound relay)."""

    def __init__(self, siegel: Siegel, inbound: Sink, outbound: Sink) -> None:
        self.siegel = siegel
        self.inbound = inbound
        self.outbound = outbound

    @property
    def port(self) -> int:
        return self.siegel.smtp_port


@pytest.fixture
def gateway(make_sink, make_siegel) -> Gateway:
    inbound = make_sink("inbound")
    outbound = make_sink("outbound")
    return Gateway(make_siegel(inbound=inbound, outbound=outbound), inbound, outbound)


@pytest.fixture
def postfix_factory():
    if not shutil.which("postfix") and not Path("/usr/sbin/postfix").exists():
        pytest.fail("postfix is not installed (scripts/test installs it)", pytrace=False)
    instances: list[Postfix] = []

    def factory(relayhost: str, **kw) -> Postfix:
        p = Postfix(relayhost, **kw)
        instances.append(p)
        p.start()
        return p

    yield factory
    for p in instances:
        p.stop()
        p.cleanup()


@pytest.fixture(scope="session")
def clamd(tmp_path_factory) -> Clamd:
    """A private clamd (database: EICAR and a custom test signature) on
    loopback and a Unix socket; `.tcp`/`.unix` are `[filter] clamd` values.
    Shared by the session: scanning keeps no state."""
    d = Clamd(tmp_path_factory.mktemp("clamd"))
    d.start()
    yield d
    d.stop()


@pytest.fixture(scope="session")
def spamd(tmp_path_factory) -> Spamd:
    """A private spamd (packaged rules, offline, no user config); `.tcp`
    and `.unix` are `[filter] spamd` values. Shared by the session: it takes
    seconds to start."""
    d = Spamd(tmp_path_factory.mktemp("spamd"))
    d.start()
    yield d
    d.stop()


@pytest.fixture
def scanners(clamd, spamd) -> dict:
    """Both daemons as a `[filter]` config section for make_siegel:
    `make_siegel(..., filter=scanners)`."""
    return {"clamd": clamd.unix, "spamd": spamd.tcp}


@pytest.fixture
def smtp_sink():
    """Postfix's smtp-sink (counting only); smtp_sink.mesg = transactions received."""
    if not shutil.which("smtp-sink") and not Path("/usr/sbin/smtp-sink").exists():
        pytest.fail("smtp-sink is not installed (scripts/test installs postfix)", pytrace=False)
    from harness.smtpsink import SmtpSink

    os.environ["PATH"] = os.environ.get("PATH", "") + ":/usr/sbin"
    s = SmtpSink()
    yield s
    s.stop()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.failed:
        for g in getattr(item, "_siegels", []):
            rep.sections.append((f"siegel stdout ({g.workdir.name})", "\n".join(g.stdout_lines)))
            rep.sections.append((f"siegel stderr tail ({g.workdir.name})", g.log_tail(6000)))


def pytest_terminal_summary(terminalreporter):
    from harness import report

    if report.LINES:
        terminalreporter.section("siegel e2e figures")
        for line in report.LINES:
            terminalreporter.write_line(line)
