"""PIPELINING (RFC 2920): a whole transaction in one write, replies in order."""

from __future__ import annotations

from harness.smtp import RawSMTP, make_message


def test_pipelined_transaction_in_one_write(gateway):
    msg, mid = make_message("pipelined", to="bob@example.com")
    with RawSMTP(gateway.port) as s:
        assert s.greeting[0] == 220
        code, text = s.cmd("EHLO client.test")
        assert code == 250 and "PIPELINING" in text.upper()
        s.send(b"MAIL FROM:<alice@example.com>\r\n"
               b"RCPT TO:<bob@example.com>\r\n"
               b"RCPT TO:<carol@example.com>\r\n"
               b"DATA\r\n")
        replies = [s.reply() for _ in range(4)]
        assert [c for c, _ in replies] == [250, 250, 250, 354], replies
        # the message, its end, and the next commands in one write as well
        s.send(msg + b".\r\nRSET\r\nNOOP\r\nQUIT\r\n")
        replies = [s.reply() for _ in range(4)]
        assert [c for c, _ in replies] == [250, 250, 250, 221], replies
    [got] = gateway.inbound.wait_for(1)
    assert sorted(got.rcpt_tos) == ["bob@example.com", "carol@example.com"]
    assert got.raw.endswith(msg)


def test_two_pipelined_transactions_in_one_write(gateway):
    m1, _ = make_message("pipe-a", to="a@example.com")
    m2, _ = make_message("pipe-b", to="b@example.com")
    with RawSMTP(gateway.port) as s:
        s.cmd("EHLO client.test")
        s.send(b"MAIL FROM:<x@far.test>\r\nRCPT TO:<a@example.com>\r\nDATA\r\n")
        assert [s.reply()[0] for _ in range(3)] == [250, 250, 354]
        s.send(m1 + b".\r\nMAIL FROM:<x@far.test>\r\nRCPT TO:<b@example.com>\r\nDATA\r\n")
        assert [s.reply()[0] for _ in range(4)] == [250, 250, 250, 354]
        s.send(m2 + b".\r\nQUIT\r\n")
        assert [s.reply()[0] for _ in range(2)] == [250, 221]
    got = gateway.inbound.wait_for(2)
    assert sorted(r for m in got for r in m.rcpt_tos) == ["a@example.com", "b@example.com"]
