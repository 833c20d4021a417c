//! The DATA receiver: dot-unstuffing, CRLF normalisation, the end marker,
//! and the SMTP smuggling defence.
//!
//! SMTP smuggling (CVE-2023-51764 and relatives) works when two servers
//! disagree on where DATA ends: a sender hides `<LF>.<LF>` plus a second
//! forged transaction inside one message, one server takes it as content,
//! the next as the end. We follow Postfix's
//! `smtpd_forbid_bare_newline = normalize`: only `<CR><LF>.<CR><LF>` ends
//! DATA (the first line may be `.<CR><LF>`, since the DATA command ended
//! with a line end); a bare LF is content and becomes CRLF, so what we store
//! and later relay is unambiguous. A bare CR is kept as content (like
//! Postfix): it is not a line end and so never starts a dot line.

/// How [`DataReceiver::feed`] progressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataProgress {
    /// Input bytes consumed. When `done`, the bytes after them are the next
    /// pipelined commands.
    pub consumed: usize,
    /// The end marker was seen.
    pub done: bool,
}

/// The verdict on the whole content, once it has ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataOutcome {
    /// Within the limits; `size` octets were produced.
    Ok { size: u64 },
    /// More than the size limit; output stopped at the limit.
    TooBig { size: u64 },
    /// A content line was longer than the line limit.
    LineTooLong,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// At the start of a line. `after_crlf` is false when the previous line
    /// ended with a bare LF: such a line can be unstuffed but never end DATA.
    LineStart {
        after_crlf: bool,
    },
    /// A dot at the start of a line.
    Dot {
        after_crlf: bool,
    },
    /// `.` then CR at the start of a line.
    DotCr {
        after_crlf: bool,
    },
    /// Inside a line.
    Mid,
    /// A CR inside a line (or at its start).
    Cr,
    Done,
}

/// Receives DATA content incrementally, producing the stored form
/// (unstuffed, CRLF line ends) and checking limits without buffering.
#[derive(Debug, Clone)]
pub struct DataReceiver {
    state: State,
    max_size: u64,
    max_line: usize,
    size: u64,
    line_len: usize,
    too_big: bool,
    line_too_long: bool,
}

impl DataReceiver {
    /// `max_size`: content octets (as stored) allowed; `max_line`: octets
    /// allowed in one content line without its line end.
    pub fn new(max_size: u64, max_line: usize) -> Self {
        Self {
            state: State::LineStart { after_crlf: true },
            max_size,
            max_line,
            size: 0,
            line_len: 0,
            too_big: false,
            line_too_long: false,
        }
    }

    /// True once the end marker has been seen.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Octets of stored content so far (counted even past the size limit).
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The verdict; meaningful once [`is_done`](Self::is_done).
    pub fn outcome(&self) -> DataOutcome {
        if self.line_too_long {
            DataOutcome::LineTooLong
        } else if self.too_big {
            DataOutcome::TooBig { size: self.size }
        } else {
            DataOutcome::Ok { size: self.size }
        }
    }

    /// True when a limit has been broken and the rest will be discarded.
    pub fn failed(&self) -> bool {
        self.too_big || self.line_too_long
    }

    fn emit(&mut self, out: &mut Vec<u8>, bytes: &[u8]) {
        for &b in bytes {
            if b == b'\n' {
                self.line_len = 0;
            } else if b != b'\r' || bytes.len() == 1 {
                // A CR of a CRLF pair is not counted; a bare CR is content.
                self.line_len += 1;
                if self.line_len > self.max_line {
                    self.line_too_long = true;
                }
            }
        }
        self.size += bytes.len() as u64;
        if self.size > self.max_size {
            self.too_big = true;
        }
        if !self.failed() {
            out.extend_from_slice(bytes);
        }
    }

    /// Consumes content from `input`, appending stored content to `out`.
    /// Stops right after the end marker. Once a limit is broken nothing more
    /// is appended, but input is still consumed up to the end marker so the
    /// session stays in step and can answer `552`.
    ///
    /// Bytes inside a line that are neither CR nor LF (nearly all of a
    /// mail) are taken as whole runs; the state machine sees only line
    /// ends and line starts.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> DataProgress {
        let mut i = 0;
        while i < input.len() {
            let plain = match self.state {
                State::Mid => true,
                State::LineStart { .. } => input[i] != b'.',
                _ => false,
            };
            if plain {
                let end = memchr::memchr2(b'\r', b'\n', &input[i..]).map_or(input.len(), |p| i + p);
                if end > i {
                    self.emit_plain(out, &input[i..end]);
                    self.state = State::Mid;
                    i = end;
                    continue;
                }
            }
            self.step(input[i], out);
            i += 1;
            if self.state == State::Done {
                return DataProgress {
                    consumed: i,
                    done: true,
                };
            }
        }
        DataProgress {
            consumed: input.len(),
            done: self.state == State::Done,
        }
    }

    /// [`Self::emit`] of a run without CR or LF, at once: appended are the
    /// bytes that keep within both limits, as byte by byte.
    fn emit_plain(&mut self, out: &mut Vec<u8>, run: &[u8]) {
        if !self.failed() {
            let by_line = self.max_line.saturating_sub(self.line_len);
            let by_size =
                usize::try_from(self.max_size.saturating_sub(self.size)).unwrap_or(usize::MAX);
            out.extend_from_slice(&run[..run.len().min(by_line).min(by_size)]);
        }
        self.line_len = self.line_len.saturating_add(run.len());
        if self.line_len > self.max_line {
            self.line_too_long = true;
        }
        self.size += run.len() as u64;
        if self.size > self.max_size {
            self.too_big = true;
        }
    }

    fn step(&mut self, b: u8, out: &mut Vec<u8>) {
        match self.state {
            State::Done => {}
            State::LineStart { after_crlf } => match b {
                b'.' => self.state = State::Dot { after_crlf },
                _ => self.in_line(b, out),
            },
            State::Dot { after_crlf } => match b {
                // The dot itself is stuffing and dropped.
                b'\r' => self.state = State::DotCr { after_crlf },
                _ => self.in_line(b, out),
            },
            State::DotCr { after_crlf } => match b {
                b'\n' if after_crlf => self.state = State::Done,
                // `<LF>.<CR><LF>`: an (unstuffed) empty line, not the end.
                b'\n' => {
                    self.emit(out, b"\r\n");
                    self.state = State::LineStart { after_crlf: true };
                }
                _ => {
                    self.emit(out, b"\r");
                    self.state = State::Mid;
                    self.in_line(b, out);
                }
            },
            State::Mid => self.in_line(b, out),
            State::Cr => match b {
                b'\n' => {
                    self.emit(out, b"\r\n");
                    self.state = State::LineStart { after_crlf: true };
                }
                b'\r' => self.emit(out, b"\r"),
                _ => {
                    self.emit(out, b"\r");
                    self.state = State::Mid;
                    self.in_line(b, out);
                }
            },
        }
    }

    /// A byte in the middle of a line (or the first byte after stuffing).
    fn in_line(&mut self, b: u8, out: &mut Vec<u8>) {
        match b {
            b'\r' => self.state = State::Cr,
            // Bare LF: normalised to CRLF, but the next line cannot end DATA.
            b'\n' => {
                self.emit(out, b"\r\n");
                self.state = State::LineStart { after_crlf: false };
            }
            _ => {
                self.emit(out, &[b]);
                self.state = State::Mid;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The receiver fed one byte at a time through the state machine alone,
    /// as it worked before runs were taken whole: the reference.
    fn bytewise(
        input: &[u8],
        max_size: u64,
        max_line: usize,
    ) -> (Vec<u8>, usize, bool, DataOutcome) {
        let mut rx = DataReceiver::new(max_size, max_line);
        let mut out = Vec::new();
        let mut consumed = input.len();
        for (i, &b) in input.iter().enumerate() {
            rx.step(b, &mut out);
            if rx.is_done() {
                consumed = i + 1;
                break;
            }
        }
        (out, consumed, rx.is_done(), rx.outcome())
    }

    proptest::proptest! {
        #[test]
        fn runs_taken_whole_give_what_byte_by_byte_gives(
            input in proptest::collection::vec(
                proptest::prop_oneof![
                    4 => proptest::prelude::any::<u8>(),
                    2 => proptest::prelude::Just(b'\r'),
                    2 => proptest::prelude::Just(b'\n'),
                    2 => proptest::prelude::Just(b'.'),
                    4 => proptest::prelude::Just(b'x'),
                ],
                0..200,
            ),
            max_size in 0u64..120,
            max_line in 0usize..40,
            cut in 0usize..200,
        ) {
            let expected = bytewise(&input, max_size, max_line);
            proptest::prop_assert_eq!(run_pieces(&[&input], max_size, max_line), expected.clone());
            let cut = cut.min(input.len());
            proptest::prop_assert_eq!(
                run_pieces(&[&input[..cut], &input[cut..]], max_size, max_line),
                expected
            );
        }
    }

    /// Feeds `input` in the given pieces; returns (content, consumed, done, outcome).
    fn run_pieces(
        pieces: &[&[u8]],
        max_size: u64,
        max_line: usize,
    ) -> (Vec<u8>, usize, bool, DataOutcome) {
        let mut rx = DataReceiver::new(max_size, max_line);
        let mut out = Vec::new();
        let mut consumed = 0;
        for piece in pieces {
            if rx.is_done() {
                break;
            }
            let p = rx.feed(piece, &mut out);
            consumed += p.consumed;
            assert_eq!(p.done, rx.is_done());
        }
        (out, consumed, rx.is_done(), rx.outcome())
    }

    fn run(input: &[u8]) -> (Vec<u8>, usize, bool, DataOutcome) {
        run_pieces(&[input], u64::MAX, 1 << 16)
    }

    /// The result must not depend on how the input is split.
    fn check_splits(input: &[u8], max_size: u64, max_line: usize) {
        let whole = run_pieces(&[input], max_size, max_line);
        for i in 0..=input.len() {
            for j in i..=input.len() {
                let split = run_pieces(
                    &[&input[..i], &input[i..j], &input[j..]],
                    max_size,
                    max_line,
                );
                assert_eq!(
                    split,
                    whole,
                    "split at {i},{j} of {:?}",
                    String::from_utf8_lossy(input)
                );
            }
        }
    }

    #[test]
    fn plain_message_and_trailing_commands() {
        let input = b"Subject: x\r\n\r\nhello\r\n.\r\nQUIT\r\n";
        let (out, consumed, done, outcome) = run(input);
        assert!(done);
        assert_eq!(out, b"Subject: x\r\n\r\nhello\r\n");
        assert_eq!(&input[consumed..], b"QUIT\r\n");
        assert_eq!(outcome, DataOutcome::Ok { size: 21 });
    }

    #[test]
    fn empty_message_first_line_dot() {
        let (out, consumed, done, _) = run(b".\r\nNOOP\r\n");
        assert!(done);
        assert!(out.is_empty());
        assert_eq!(consumed, 3);
    }

    #[test]
    fn dot_unstuffing() {
        let (out, _, done, _) = run(b"..leading\r\n...\r\n..\r\nmid.dot\r\n.\r\n");
        assert!(done);
        assert_eq!(out, b".leading\r\n..\r\n.\r\nmid.dot\r\n");
    }

    #[test]
    fn bare_lf_is_normalised() {
        let (out, _, done, _) = run(b"a\nb\r\nc\n\r\n.\r\n");
        assert!(done);
        assert_eq!(out, b"a\r\nb\r\nc\r\n\r\n");
    }

    #[test]
    fn smuggling_sequences_do_not_end_data() {
        for (input, expected) in [
            (
                &b"a\n.\nMAIL FROM:<x@y.de>\r\n"[..],
                &b"a\r\n\r\nMAIL FROM:<x@y.de>\r\n"[..],
            ),
            (
                b"a\n.\r\nMAIL FROM:<x@y.de>\r\n",
                b"a\r\n\r\nMAIL FROM:<x@y.de>\r\n",
            ),
            (
                b"a\r.\rMAIL FROM:<x@y.de>\r\n",
                b"a\r.\rMAIL FROM:<x@y.de>\r\n",
            ),
            (
                b"a\r\n.\nMAIL FROM:<x@y.de>\r\n",
                b"a\r\n\r\nMAIL FROM:<x@y.de>\r\n",
            ),
            (
                b"a\r\n.\rMAIL FROM:<x@y.de>\r\n",
                b"a\r\n\rMAIL FROM:<x@y.de>\r\n",
            ),
        ] {
            let (out, consumed, done, _) = run(input);
            assert!(!done, "{:?} ended DATA", String::from_utf8_lossy(input));
            assert_eq!(consumed, input.len());
            assert_eq!(out, expected, "{:?}", String::from_utf8_lossy(input));
        }
        // After a smuggling attempt, only the real end marker ends it.
        let (out, _, done, _) = run(b"a\n.\nb\r\n.\r\n");
        assert!(done);
        assert_eq!(out, b"a\r\n\r\nb\r\n");
    }

    #[test]
    fn stored_content_never_has_bare_lf() {
        let (out, _, _, _) = run(b"x\ny\n\n.\n..\n\r\n\n.\r\n");
        for (i, &b) in out.iter().enumerate() {
            if b == b'\n' {
                assert!(i > 0 && out[i - 1] == b'\r', "bare LF at {i} in {out:?}");
            }
        }
    }

    #[test]
    fn size_limit_consumes_to_the_end() {
        let input = b"0123456789\r\n0123456789\r\n.\r\nQUIT\r\n";
        let (out, consumed, done, outcome) = run_pieces(&[input], 15, 1000);
        assert!(done);
        assert_eq!(&input[consumed..], b"QUIT\r\n");
        assert_eq!(outcome, DataOutcome::TooBig { size: 24 });
        assert!(out.len() <= 15);
        let (_, _, _, outcome) = run_pieces(&[input], 24, 1000);
        assert_eq!(outcome, DataOutcome::Ok { size: 24 });
    }

    #[test]
    fn line_limit() {
        let (_, _, done, outcome) = run_pieces(&[b"12345\r\n123456\r\n.\r\n"], 1000, 5);
        assert!(done);
        assert_eq!(outcome, DataOutcome::LineTooLong);
        let (_, _, _, outcome) = run_pieces(&[b"12345\r\n.12345\r\n.\r\n"], 1000, 5);
        assert_eq!(outcome, DataOutcome::Ok { size: 14 });
    }

    #[test]
    fn every_split_gives_the_same_result() {
        for input in [
            &b"Subject: x\r\n\r\n..a\r\n.\r\nQUIT\r\n"[..],
            b".\r\n",
            b"a\n.\nb\r.\rc\r\n.\nd\n.\r\n.\r\n",
            b"\r\r\n.\r\r\n..\r\n.\r\nNOOP",
            b"0123456789\r\n01234567890123\r\n.\r\n",
        ] {
            check_splits(input, 1000, 1000);
            check_splits(input, 12, 1000);
            check_splits(input, 1000, 10);
        }
    }

    #[test]
    fn big_input_is_not_buffered_when_too_big() {
        let mut rx = DataReceiver::new(100, 1 << 16);
        let mut out = Vec::new();
        let chunk = vec![b'x'; 8192];
        for _ in 0..1000 {
            rx.feed(&chunk, &mut out);
            rx.feed(b"\r\n", &mut out);
        }
        assert!(out.len() <= 100);
        let p = rx.feed(b".\r\n", &mut out);
        assert!(p.done);
        assert!(matches!(rx.outcome(), DataOutcome::TooBig { .. }));
    }

    /// Generated inputs made of the tokens that matter (line ends, dots,
    /// bare CR/LF): byte-at-a-time feeding equals whole feeding, and the
    /// stored content never has a bare LF.
    #[test]
    fn generated_inputs_byte_by_byte() {
        let tokens: [&[u8]; 7] = [b"\r\n", b"\n", b"\r", b".", b"x", b"..", b"\r\n.\r\n"];
        let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..3000 {
            let mut input = Vec::new();
            for _ in 0..next() % 16 {
                input.extend_from_slice(tokens[(next() % 7) as usize]);
            }
            let whole = run_pieces(&[&input], 1000, 1000);
            let bytes: Vec<&[u8]> = input.chunks(1).collect();
            assert_eq!(
                run_pieces(&bytes, 1000, 1000),
                whole,
                "{:?}",
                String::from_utf8_lossy(&input)
            );
            let out = &whole.0;
            for (i, &b) in out.iter().enumerate() {
                assert!(
                    b != b'\n' || (i > 0 && out[i - 1] == b'\r'),
                    "bare LF in {out:?}"
                );
            }
        }
    }
}
