"""GINA in a real browser: the container file opened from file:// in headless
Chromium, the portal over HTTPS from the real `siegel serve`, mail in and out
through real sinks.

Containers come the way they do in production: a confidential mail is sent
by SMTP, the policy picks GINA for a recipient without keys, the carrier
mail arrives at the outbound sink (the container file is taken from it) and,
at the first mail to a recipient, the sender's notification with the
initial password at the inbound sink. So these tests cover SMTP → carrier →
file → portal → registration → reading → attachments → reply → read
receipt, the hostile-content corpus, wrong account / modified / expired /
revoked containers, lock-out, throttling and CSRF. Screenshots of every page go to the test's tmp folder
(`SIEGEL_UPDATE_SCREENSHOTS=1` copies the main ones to docs/screenshots/).
"""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

from harness.browser import Canary, Shots, make_driver, requested_urls
from harness.smtp import send

NEW_PW = "Tr7$kq!vPz2m-Gina"
PDF = b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"


class Gina:
    def __init__(self, siegel, inbound, outbound) -> None:
        self.siegel = siegel
        self.inbound = inbound
        self.outbound = outbound
        self.n = 0

    @property
    def url(self) -> str:
        return self.siegel.portal_url

    def seal(self, mail: bytes, to: str = "bob@partner.example", frm: str = "alice@example.com"):
        """Sends a mail marked confidential through the gateway by SMTP and
        returns (the container file from the carrier that arrived, the
        initial password from the sender's notification, or None when the
        recipient already had an account)."""
        self.n += 1
        marked = mail.replace(b"\r\n", b"\r\nSensitivity: Company-Confidential\r\n", 1)
        carriers_before = len(self.outbound.messages())
        notices_before = len(self._notices(frm))
        send(self.siegel.smtp_port, frm, [to], marked)
        carrier = self.outbound.wait_for(carriers_before + 1, timeout=60)[carriers_before]
        assert carrier.rcpt_tos == [to], carrier.rcpt_tos
        assert carrier.header("X-Siegel-Gina-Container"), carrier.raw[:1500]
        file = next(p for p in carrier.message().walk()
                    if p.get_content_type() == "text/html" and p.get_filename())
        out = self.siegel.workdir / f"secure-message-{self.n}.html"
        out.write_bytes(file.get_payload(decode=True))
        # The notice goes out before the carrier is made; give it a moment
        # to arrive, but only the first mail to a recipient has one.
        deadline = time.monotonic() + 5
        while len(self._notices(frm)) == notices_before and time.monotonic() < deadline:
            time.sleep(0.1)
        notices = self._notices(frm)
        if len(notices) == notices_before:
            return out, None
        text = notices[-1].message().get_body(("plain",)).get_content()
        assert to in text, text
        m = re.search(r"\b[A-Za-z0-9]{4}-[A-Za-z0-9]{4}-[A-Za-z0-9]{4}\b", text)
        assert m, text
        return out, m.group(0)

    def _notices(self, sender: str):
        """The gateway's own mails to the sender (from [gina] notification_from)."""
        return [m for m in self.inbound.messages()
                if m.rcpt_tos == [sender] and m.mail_from == "siegel@example.com"]


@pytest.fixture
def gina_factory(make_sink, make_siegel):
    def factory(**over) -> Gina:
        # Mails to senders in English, so the texts the tests look for match.
        over["gina"] = {"default_language": "en", **over.get("gina", {})}
        inbound = make_sink("inbound")
        outbound = make_sink("outbound")
        return Gina(make_siegel(inbound=inbound, outbound=outbound, **over), inbound, outbound)
    return factory


@pytest.fixture
def browsers(tmp_path):
    made = []

    def factory(name: str = "b"):
        d = make_driver(tmp_path / f"downloads-{name}")
        made.append(d)
        return d

    yield factory
    for d in made:
        d.quit()


def mail(subject: str, html: str | None = None, text: str = "Hello Bob.", attach: bool = False,
         receipt: bool = False, message_id: str = "m1@example.com") -> bytes:
    head = (f"From: Alice Example <alice@example.com>\r\nTo: bob@partner.example\r\nSubject: {subject}\r\n"
            f"Message-ID: <{message_id}>\r\nDate: Thu, 01 Jan 2026 10:00:00 +0000\r\nMIME-Version: 1.0\r\n")
    if receipt:
        head += "Disposition-Notification-To: alice@example.com\r\n"
    body_ct = "text/html; charset=utf-8" if html is not None else "text/plain; charset=utf-8"
    body = html if html is not None else text
    if not attach:
        return (head + f"Content-Type: {body_ct}\r\n\r\n{body}\r\n").encode()
    import base64
    b64 = base64.b64encode(PDF).decode()
    return (head + "Content-Type: multipart/mixed; boundary=zz\r\n\r\n"
            f"--zz\r\nContent-Type: {body_ct}\r\n\r\n{body}\r\n"
            f"--zz\r\nContent-Type: application/pdf; name=\"report.pdf\"\r\n"
            f"Content-Disposition: attachment; filename=\"report.pdf\"\r\nContent-Transfer-Encoding: base64\r\n\r\n"
            f"{b64}\r\n--zz--\r\n").encode()


def wait(driver, css: str, timeout: float = 30):
    return WebDriverWait(driver, timeout).until(EC.presence_of_element_located((By.CSS_SELECTOR, css)))


def open_file(driver, path: Path) -> None:
    """Opens the attachment from file:// and clicks its one button."""
    driver.get(path.as_uri())
    driver.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()


def login_and_register(driver, g: Gina, path: Path, email: str, initial: str, shots: Shots | None = None):
    open_file(driver, path)
    wait(driver, "input[name=password]")
    if shots:
        shots.take("open-login", main=True)
    pw = driver.find_element(By.NAME, "password")
    pw.send_keys(initial)
    email_field = driver.find_element(By.NAME, "email")
    assert email_field.get_attribute("value") == email, "recipient prefilled"
    assert pw.get_attribute("autocomplete") == "current-password"
    driver.find_element(By.CSS_SELECTOR, "button[value=login]").click()
    wait(driver, "input[name=new_password]")
    if shots:
        shots.take("register", main=True)
    assert driver.find_element(By.NAME, "new_password").get_attribute("autocomplete") == "new-password"
    driver.find_element(By.NAME, "new_password").send_keys(NEW_PW)
    driver.find_element(By.NAME, "new_password_confirm").send_keys(NEW_PW)
    driver.find_element(By.NAME, "security_question").send_keys("Name of my first pet?")
    driver.find_element(By.NAME, "security_answer").send_keys("Rex")
    driver.find_element(By.CSS_SELECTOR, "form.form button[type=submit]").click()


def test_browser_open_register_read_download_reply_receipt(gina_factory, browsers, tmp_path):
    g = gina_factory()
    driver = browsers()
    shots = Shots(driver, tmp_path / "screenshots")
    path, initial = g.seal(mail("Contract draft", html="<h2>Dear Bob</h2><p>The <b>draft</b> is attached.</p>",
                                attach=True, receipt=True))
    assert initial, "first mail to bob creates the account"

    driver.get(path.as_uri())
    assert "Open message" in driver.page_source
    shots.take("container-file", main=True)
    open_file(driver, path)
    wait(driver, "input[name=password]")
    assert driver.current_url.startswith(g.url + "/open")
    login_and_register(driver, g, path, "bob@partner.example", initial, shots)

    frame = wait(driver, "iframe.body-frame")
    shots.take("read", main=True)
    assert "Contract draft" in driver.find_element(By.CSS_SELECTOR, "h1.subject").text
    assert frame.get_attribute("sandbox") == "allow-popups allow-popups-to-escape-sandbox"
    driver.switch_to.frame(frame)
    assert "Dear Bob" in driver.find_element(By.TAG_NAME, "body").text
    driver.switch_to.default_content()

    # The read receipt reaches the sender at the first open.
    receipts = g.inbound.wait_for(1, pred=lambda m: b"disposition-notification" in m.raw)
    r = receipts[0]
    assert r.rcpt_tos == ["alice@example.com"]
    assert b"Original-Message-ID: <m1@example.com>" in r.raw

    # The attachment downloads with its bytes.
    driver.find_element(By.CSS_SELECTOR, "button.attachment").click()
    target = tmp_path / "downloads-b" / "report.pdf"
    deadline = time.monotonic() + 20
    while not target.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert target.read_bytes() == PDF

    # Reply with an attachment.
    driver.find_element(By.CSS_SELECTOR, "button[value=reply]").click()
    body = wait(driver, "textarea[name=body]")
    assert driver.find_element(By.NAME, "to").get_attribute("value") == "alice@example.com"
    shots.take("reply", main=True)
    body.send_keys("Thanks, the signed copy is attached.")
    signed = tmp_path / "signed-copy.pdf"
    signed.write_bytes(PDF + b"% signed\n")
    driver.find_element(By.NAME, "attachments").send_keys(str(signed))
    driver.find_element(By.CSS_SELECTOR, "form.compose button[type=submit]").click()
    WebDriverWait(driver, 30).until(lambda d: "Your message was sent" in d.page_source)
    shots.take("sent", main=True)
    replies = g.inbound.wait_for(1, pred=lambda m: m.mail_from == "bob@partner.example")
    rep = replies[0].message()
    assert rep["In-Reply-To"] == "<m1@example.com>"
    names = [p.get_filename() for p in rep.iter_attachments()]
    assert "signed-copy.pdf" in names
    assert "Thanks, the signed copy is attached." in replies[0].raw.decode(errors="replace")

    # The other pages, for the record.
    driver.get(g.url + "/settings")
    wait(driver, "input[name=new_password]")
    shots.take("settings", main=True)
    driver.get(g.url + "/compose")
    wait(driver, "textarea[name=body]")
    shots.take("new-message")
    driver.get(g.url + "/")
    driver.find_element(By.CSS_SELECTOR, "form.inline button").click()  # log out
    WebDriverWait(driver, 30).until(lambda d: "logged out" in d.page_source, message=driver.page_source[-3000:])
    shots.take("logged-out")
    driver.get(g.url + "/reset")
    shots.take("reset")
    driver.get(g.url + "/signup")
    shots.take("signup")
    driver.get(g.url + "/lang/de?next=/")
    wait(driver, "input[name=password]")
    assert "Anmelden" in driver.page_source
    shots.take("login-de", main=True)
    assert len(shots.taken) >= 10


HOSTILE = """
<p id="hello">Hostile corpus</p>
<script>fetch('{C}/script-ran'); document.title='pwned'; parent.document.title='pwned'</script>
<img src="x" onerror="fetch('{C}/onerror')">
<body onload="fetch('{C}/bodyonload')">
<a id="js" href="javascript:fetch('{C}/jslink')">javascript link</a>
<a id="data" href="data:text/html,<script>fetch('{C}/datalink')</script>">data link</a>
<svg onload="fetch('{C}/svgonload')"><script>fetch('{C}/svgscript')</script><image href="{C}/svgimage.png"/></svg>
<div style="background:url({C}/cssurl.png)">styled</div>
<style>@import url({C}/import.css); body {{ background: url({C}/bodybg.png) }}</style>
<link rel="stylesheet" href="{C}/link.css">
<meta http-equiv="refresh" content="0;url={C}/refresh">
<base href="{C}/base/">
<a id="rel" href="relative-link">relative</a>
<form action="{C}/form" method="post"><input name="x" value="1"><button id="fb">go</button></form>
<iframe src="{C}/iframe"></iframe>
<object data="{C}/object"></object><embed src="{C}/embed">
<video src="{C}/video.mp4" poster="{C}/poster.png"></video>
<img srcset="{C}/srcset.png 1x">
<table background="{C}/tablebg.png"><tr><td>table</td></tr></table>
<img src="{C}/remote.gif" alt="remote">
<p>End of corpus</p>
<math><mtext><table><mglyph><style><img src=x onerror="fetch('{C}/mxss')">
<div <script>fetch('{C}/malformed')</script>
<<img src=x onerror=fetch('{C}/malformed2')>
"""


def test_hostile_content_runs_no_script_and_loads_nothing_foreign(gina_factory, browsers, tmp_path):
    g = gina_factory()
    canary = Canary()
    try:
        driver = browsers()
        shots = Shots(driver, tmp_path / "screenshots")
        html = HOSTILE.replace("{C}", canary.origin).replace("{{", "{").replace("}}", "}")
        path, initial = g.seal(mail("Hostile corpus", html=html))
        login_and_register(driver, g, path, "bob@partner.example", initial)
        frame = wait(driver, "iframe.body-frame")
        time.sleep(3)  # give any script, refresh or load time to happen
        shots.take("hostile-read", main=True)
        driver.switch_to.frame(frame)
        text = driver.find_element(By.TAG_NAME, "body").text
        assert "Hostile corpus" in text and "End of corpus" in text, "the mail was rendered"
        for link in ("js", "data", "rel"):
            els = driver.find_elements(By.ID, link)
            if els:
                els[0].click()
                time.sleep(0.5)
                driver.switch_to.window(driver.window_handles[0])
                driver.switch_to.default_content()
                driver.switch_to.frame(wait(driver, "iframe.body-frame"))
        driver.switch_to.default_content()
        time.sleep(1)
        assert "pwned" not in driver.title
        assert canary.requests == [], f"requests left for another host: {canary.requests}"
        portal = g.url
        foreign = [u for u in requested_urls(driver)
                   if not (u.startswith(portal) or u.startswith("data:") or u.startswith("about:")
                           or u.startswith("file:") or u.startswith("chrome"))]
        assert foreign == [], foreign
        # External images only on request: then exactly the image, nothing else.
        driver.find_element(By.CSS_SELECTOR, "button[name=remote_images]").click()
        wait(driver, "iframe.body-frame")
        time.sleep(2)
        shots.take("hostile-images-shown")
        assert canary.requests == ["GET /remote.gif"], canary.requests
        assert "pwned" not in driver.title
    finally:
        canary.stop()


def tamper(path: Path, out: Path) -> Path:
    """Flips one base64 character deep inside the container (in a content
    segment, not the header)."""
    with open(path, newline="") as f:
        text = f.read()
    start = text.index("readonly>") + len("readonly>")
    lines = text[start:].split("\r\n")
    i = 1 + 12  # well past the header
    line = lines[i]
    lines[i] = ("B" if line[10] != "B" else "C").join([line[:10], line[11:]])
    with open(out, "w", newline="") as f:
        f.write(text[:start] + "\r\n".join(lines))
    return out


def test_other_account_modified_and_revoked_containers(gina_factory, browsers, tmp_path):
    g = gina_factory()
    driver = browsers("bob")
    shots = Shots(driver, tmp_path / "screenshots")
    big = "<p>" + ("Confidential figures. " * 2000) + "</p>"
    bob_file, bob_pw = g.seal(mail("For Bob", html=big, message_id="bob-1@example.com"))
    login_and_register(driver, g, bob_file, "bob@partner.example", bob_pw)
    wait(driver, "iframe.body-frame")

    # A modified container gets a clear page.
    bad = tamper(bob_file, tmp_path / "modified.html")
    open_file(driver, bad)
    wait(driver, "button[value=open]").click()  # this browser is logged in: one click
    WebDriverWait(driver, 30).until(lambda d: "cannot be opened" in d.page_source)
    assert "changed after it was sent" in driver.page_source
    shots.take("modified", main=True)

    # Carol, logged in, cannot open Bob's container.
    carol_file, carol_pw = g.seal(mail("For Carol", message_id="carol-1@example.com"), to="carol@partner.example")
    carol = browsers("carol")
    login_and_register(carol, g, carol_file, "carol@partner.example", carol_pw)
    wait(carol, ".body-text")
    open_file(carol, bob_file)
    wait(carol, "button[value=open]").click()
    WebDriverWait(carol, 30).until(lambda d: "for someone else" in d.page_source)
    assert "Confidential figures" not in carol.page_source
    Shots(carol, tmp_path / "screenshots-carol").take("wrong-account", main=True)

    # Revoked: the key is gone, the file says so.
    r = g.siegel.cli("gina", "revoke", "<bob-1@example.com>")
    assert r.returncode == 0, r.stdout + r.stderr
    open_file(driver, bob_file)
    WebDriverWait(driver, 30).until(lambda d: "withdrawn" in d.page_source)
    shots.take("revoked", main=True)


def test_expired_container(gina_factory, browsers, tmp_path):
    g = gina_factory(gina={"container_expiry": "2s"})
    driver = browsers()
    path, _ = g.seal(mail("Short-lived"))
    time.sleep(3)
    open_file(driver, path)
    WebDriverWait(driver, 30).until(lambda d: "has expired" in d.page_source)
    Shots(driver, tmp_path / "screenshots").take("expired", main=True)


def test_lockout_spares_own_browser_throttling_and_csrf(gina_factory, browsers, tmp_path):
    g = gina_factory(gina={"lock_after": 3, "lock_for": "10m", "client_limit": 12})
    bob = browsers("bob")
    path, pw = g.seal(mail("Hello"))
    login_and_register(bob, g, path, "bob@partner.example", pw)
    wait(bob, ".body-text")

    # CSRF: a page on another site posts to the portal with Bob's browser.
    attack = Canary()
    try:
        attack.attacker_page = (
            f"<form id=f method=post enctype=multipart/form-data action='{g.url}/settings/language'>"
            "<input name=language value=de></form><script>document.getElementById('f').submit()</script>")
        bob.get(attack.origin + "/attack")
        WebDriverWait(bob, 30).until(lambda d: d.current_url.startswith(g.url))
        assert "This form has expired" in bob.page_source
        Shots(bob, tmp_path / "screenshots").take("csrf-refused")
    finally:
        attack.stop()
    listing = g.siegel.cli("gina", "list").stdout
    assert re.search(r"bob@partner\.example\tactive\tgina\ten", listing), listing

    # An attacker's browser locks the account after 3 failures ...
    evil = browsers("evil")
    shots = Shots(evil, tmp_path / "screenshots-evil")
    for i in range(3):
        evil.get(g.url + "/")
        evil.find_element(By.NAME, "email").send_keys("bob@partner.example")
        evil.find_element(By.NAME, "password").send_keys(f"Guess{i}Word")
        evil.find_element(By.CSS_SELECTOR, "button[value=login]").click()
        # The third failure is the one that locks.
        WebDriverWait(evil, 30).until(lambda d: "password is wrong" in d.page_source
                                      or "Too many failed attempts" in d.page_source)
    evil.get(g.url + "/")
    evil.find_element(By.NAME, "email").send_keys("bob@partner.example")
    evil.find_element(By.NAME, "password").send_keys(NEW_PW)
    evil.find_element(By.CSS_SELECTOR, "button[value=login]").click()
    WebDriverWait(evil, 30).until(lambda d: "Too many failed attempts" in d.page_source)
    shots.take("locked", main=True)
    assert re.search(r"bob@partner\.example\tlocked", g.siegel.cli("gina", "list").stdout)

    # ... but Bob's own browser (known device) still logs in.
    bob.get(g.url + "/")
    bob.find_element(By.CSS_SELECTOR, "form.inline button").click()
    wait(bob, "input[name=password]")
    bob.find_element(By.NAME, "email").send_keys("bob@partner.example")
    bob.find_element(By.NAME, "password").send_keys(NEW_PW)
    bob.find_element(By.CSS_SELECTOR, "button[value=login]").click()
    WebDriverWait(bob, 30).until(lambda d: "Welcome" in d.page_source)

    # Throttling per client address: many failures for many addresses.
    for i in range(12):
        evil.get(g.url + "/")
        evil.find_element(By.NAME, "email").send_keys(f"someone{i}@partner.example")
        evil.find_element(By.NAME, "password").send_keys("Whatever1A")
        evil.find_element(By.CSS_SELECTOR, "button[value=login]").click()
        WebDriverWait(evil, 30).until(lambda d: "password is wrong" in d.page_source
                                      or "Too many" in d.page_source)
    assert "Too many attempts from your network" in evil.page_source
    shots.take("throttled")


def test_settings_upload_certificate_makes_the_policy_use_smime(gina_factory, browsers, tmp_path):
    g = gina_factory()
    driver = browsers()
    path, pw = g.seal(mail("Hello"))
    login_and_register(driver, g, path, "bob@partner.example", pw)
    wait(driver, ".body-text")
    # Bob's own S/MIME certificate (made with openssl, email SAN).
    key, cert = tmp_path / "bob.key", tmp_path / "bob.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "30", "-subj", "/CN=Bob", "-addext", "subjectAltName=email:bob@partner.example",
                    "-addext", "keyUsage=digitalSignature,keyEncipherment"], check=True, capture_output=True)
    # Someone else's certificate is refused.
    other = tmp_path / "eve.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(tmp_path / "eve.key"),
                    "-out", str(other), "-days", "30", "-subj", "/CN=Eve",
                    "-addext", "subjectAltName=email:eve@partner.example"], check=True, capture_output=True)
    driver.get(g.url + "/settings")
    driver.find_element(By.CSS_SELECTOR, "input[name=method][value=smime]").click()
    driver.find_element(By.NAME, "key_file").send_keys(str(other))
    driver.find_element(By.CSS_SELECTOR, "form[action$='/settings/method'] button").click()
    WebDriverWait(driver, 30).until(lambda d: "is not a certificate or public key for" in d.page_source)
    driver.find_element(By.CSS_SELECTOR, "input[name=method][value=smime]").click()
    driver.find_element(By.NAME, "key_file").send_keys(str(cert))
    driver.find_element(By.CSS_SELECTOR, "form[action$='/settings/method'] button").click()
    WebDriverWait(driver, 30).until(lambda d: "Your choice was saved" in d.page_source)
    Shots(driver, tmp_path / "screenshots").take("settings-certificate")
    # From now on the policy encrypts to Bob's certificate.
    r = g.siegel.cli("policy", "explain", "--from", "alice@example.com", "--to", "bob@partner.example",
                     "--subject", "[secure] figures")
    assert r.returncode == 0, r.stdout + r.stderr
    decision = r.stdout.split("bob@partner.example", 1)[1]
    assert re.search(r"decision:\s+S/MIME", decision) and "chose S/MIME in the portal" in decision, r.stdout
