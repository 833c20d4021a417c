"""A recording SMTP sink for the end-to-end tests, built on aiosmtpd.

Why not Postfix's smtp-sink for everything: the tests need to see *what*
Siegel delivered (envelope, bytes, whether STARTTLS was used) and to make the
next hop misbehave on purpose (451 then 250, 550 for one recipient, slow
answers). smtp-sink can only count and throw away; this sink records every
transaction into a directory that the test process reads, so it also works
across sink restarts (crash-recovery test).

Run as a program (one sink per process, so a test can stop and restart it and
so its event loop never competes with the test's own threads):

    python3 sink.py --port P --dir D [--cert C --key K] [--script S.json]

It prints ``sink: ready`` on stdout once it accepts connections.

Layout of D:
  msgs/NNNNNNNN.eml   the message bytes as received (dot-unstuffed, CRLF)
  msgs/NNNNNNNN.json  envelope: mail_from, rcpt_tos, options, tls, helo, peer
  events.jsonl        one JSON line per command outcome (connect, ehlo,
                      starttls, mail, rcpt, data) - lets tests prove that a
                      peer *never* sent MAIL, e.g. for required TLS

The .json file is written last (atomically, via rename), so a reader that
sees it also sees the whole .eml.

Script file (JSON, re-read whenever it changes, so a test can flip the
sink's behaviour while it runs):
  {"rcpt": {"bob@x.test": ["550 5.1.1 no such user"], "*": ["250"]},
   "mail": {"*": ["451 4.3.0 busy", "250"]},
   "data": ["451 4.3.0 try later", "250"],
   "data_delay": 0.5}
Each list is a sequence of replies for the 1st, 2nd, ... attempt (per
address for mail/rcpt, global for data); the last entry repeats. "250"
means accept normally.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import ssl
import sys
import threading
import time
from pathlib import Path

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP


class _Script:
    """Scripted replies, re-read from disk when the file changes."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.mtime = None
        self.data: dict = {}
        self.counters: dict[str, int] = {}

    def _load(self) -> None:
        if self.path is None:
            return
        try:
            mtime = self.path.stat().st_mtime_ns
        except FileNotFoundError:
            self.data = {}
            return
        if mtime != self.mtime:
            self.data = json.loads(self.path.read_text() or "{}")
            self.mtime = mtime

    def reply(self, verb: str, key: str | None) -> str | None:
        """The scripted reply for this attempt, or None for default."""
        self._load()
        entry = self.data.get(verb)
        if entry is None:
            return None
        if isinstance(entry, dict):
            k = (key or "").lower()
            k = k if k in entry else "*"
            seq = entry.get(k)
            counter_key = f"{verb}:{k}"
        else:
            seq = entry
            counter_key = verb
        if not seq:
            return None
        n = self.counters.get(counter_key, 0)
        self.counters[counter_key] = n + 1
        r = seq[min(n, len(seq) - 1)]
        return None if r.strip().startswith("250") else r

    def delay(self) -> float:
        self._load()
        return float(self.data.get("data_delay", 0) or 0)


class RecordingHandler:
    def __init__(self, out: Path, script: _Script) -> None:
        self.out = out
        self.msgs = out / "msgs"
        self.msgs.mkdir(parents=True, exist_ok=True)
        self.script = script
        self.seq = len(list(self.msgs.glob("*.json")))
        self.events = open(out / "events.jsonl", "a", buffering=1)

    def event(self, **kw) -> None:
        kw["t"] = time.time()
        self.events.write(json.dumps(kw) + "\n")

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        session.host_name = hostname
        self.event(ev="ehlo", helo=hostname, tls=session.ssl is not None)
        # advertise DSN so that a relaying client passes RFC 3461 parameters on
        return responses[:-1] + ["250-DSN"] + responses[-1:]

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        r = self.script.reply("mail", address)
        self.event(ev="mail", addr="" if address == "<>" else address, options=mail_options,
                   tls=session.ssl is not None, reply=r or "250")
        if r:
            return r
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 OK"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        r = self.script.reply("rcpt", address)
        self.event(ev="rcpt", addr=address, options=rcpt_options, reply=r or "250")
        if r:
            return r
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server, session, envelope):
        d = self.script.delay()
        if d:
            await asyncio.sleep(d)
        r = self.script.reply("data", None)
        tls = session.ssl is not None
        self.event(ev="data", mail_from=envelope.mail_from, rcpt_tos=envelope.rcpt_tos,
                   tls=tls, reply=r or "250")
        if r:
            return r
        self.seq += 1
        name = f"{self.seq:08d}"
        content = envelope.original_content or b""
        cipher = session.ssl.get("cipher") if tls and isinstance(session.ssl, dict) else None
        (self.msgs / f"{name}.eml").write_bytes(content)
        meta = {
            # aiosmtpd keeps the null reverse-path as "<>" (and needs it
            # truthy for RCPT); record it as "" like every other sender
            "mail_from": "" if envelope.mail_from == "<>" else envelope.mail_from,
            "rcpt_tos": list(envelope.rcpt_tos),
            "mail_options": list(envelope.mail_options),
            "rcpt_options": list(envelope.rcpt_options),
            "tls": tls,
            "cipher": list(cipher) if cipher else None,
            "helo": session.host_name,
            "peer": list(session.peer) if session.peer else None,
            "size": len(content),
            "time": time.time(),
        }
        tmp = self.msgs / f".{name}.json.tmp"
        tmp.write_text(json.dumps(meta))
        os.replace(tmp, self.msgs / f"{name}.json")
        return "250 2.0.0 OK queued as " + name


class _SinkSMTP(SMTP):
    # Siegel may legitimately relay lines longer than RFC 5321's 1000 bytes
    # if a client sent them; with aiosmtpd's default limit (1001) the *sink*
    # would be the party refusing the mail, and a test would blame Siegel.
    line_length_limit = 16 * 1024 * 1024

    # aiosmtpd answers 555 to any ESMTP parameter it does not know. The sink
    # advertises DSN (RFC 3461), so it must accept DSN's parameters; they
    # still reach the hooks (and the recorded envelope) via the raw options.
    _DSN_PARAMS = ("RET", "ENVID", "NOTIFY", "ORCPT")

    def _getparams(self, params):
        result = super()._getparams(params)
        if result is not None:
            for k in self._DSN_PARAMS:
                result.pop(k, None)
        return result


class _SinkController(Controller):
    def factory(self):
        return _SinkSMTP(self.handler, **self.SMTP_kwargs)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--dir", required=True)
    ap.add_argument("--cert")
    ap.add_argument("--key")
    ap.add_argument("--script")
    ap.add_argument("--hostname", default="sink.test")
    a = ap.parse_args()

    out = Path(a.dir)
    out.mkdir(parents=True, exist_ok=True)
    handler = RecordingHandler(out, _Script(Path(a.script) if a.script else None))
    kwargs = dict(
        hostname=a.host,
        port=a.port,
        server_hostname=a.hostname,
        data_size_limit=512 * 1024 * 1024,
        enable_SMTPUTF8=True,
        decode_data=False,
        ident="recording sink",
    )
    if a.cert:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(a.cert, a.key)
        kwargs["tls_context"] = ctx
        kwargs["require_starttls"] = False
    ctl = _SinkController(handler, **kwargs)
    ctl.start()
    print("sink: ready", flush=True)
    stop = threading.Event()
    import signal

    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    ctl.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
