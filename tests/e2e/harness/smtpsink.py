"""Postfix's smtp-sink, for counting: it accepts everything, throws it away
and (with -c) prints running counters, which we parse. Much faster than the
recording sink; used where only "how many arrived" matters (bench, bursts)."""

from __future__ import annotations

import os
import re
import subprocess
import threading

from .ports import free_port, wait_port


class SmtpSink:
    def __init__(self, port: int | None = None, *, extra_args: list[str] | None = None) -> None:
        self.port = port or free_port()
        self.mesg = 0
        # smtp-sink refuses to run as root unless told which user to become
        user = ["-u", "postfix"] if os.geteuid() == 0 else []
        self.proc = subprocess.Popen(
            ["smtp-sink", *user, "-c", *(extra_args or []), f"127.0.0.1:{self.port}", "1024"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        threading.Thread(target=self._pump, daemon=True).start()
        if not wait_port(self.port):
            self.stop()
            raise RuntimeError("smtp-sink did not start")

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        buf = b""
        while True:
            chunk = self.proc.stdout.read1(65536)
            if not chunk:
                return
            buf = (buf + chunk)[-4096:]
            found = re.findall(rb"mesg=(\d+)", buf)
            if found:
                self.mesg = max(self.mesg, int(found[-1]))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
