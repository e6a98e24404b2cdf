//! Splits a JSON-RPC byte stream into JSON values. Clients send values back to back, with or
//! without newlines, pretty-printed or not, and a value may arrive over many reads, so the
//! stream has no delimiter: a value ends where its outermost bracket (or string, or scalar)
//! closes. A cheap incremental scanner finds that end, remembering where it stopped so each
//! byte is looked at once, and only then is the value handed to serde_json. Re-parsing the
//! whole buffer after every read would be quadratic in the size of a large request.
//!
//! The scanner also rejects, as soon as it sees them, bytes that cannot occur in JSON outside
//! a string (random or binary input), mismatched brackets, nesting deeper than serde_json's
//! own recursion limit, and a value growing past [`MAX_REQUEST_BYTES`]: there is no point
//! waiting for the rest of something that can never parse. After an error the stream has no
//! resynchronisation point, so the connection is answered once and closed.

use serde_json::Value;
use thiserror::Error;

/// Largest single request accepted: bigger values are refused (and the connection closed)
/// before they are buffered whole. SPDK caps its send buffer at 32 MiB; no real request comes
/// near this.
pub const MAX_REQUEST_BYTES: usize = 16 << 20;

/// Deepest nesting accepted, equal to serde_json's recursion limit.
pub const MAX_DEPTH: usize = 128;

/// Why the stream cannot be parsed any further.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum FramingError {
    /// Not JSON.
    #[error("{0}")]
    Syntax(String),
    /// One value larger than [`MAX_REQUEST_BYTES`].
    #[error("request larger than {MAX_REQUEST_BYTES} bytes")]
    TooLarge,
}

/// Where the scanner is inside the value it is reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Between values: skipping whitespace.
    Idle,
    /// Inside an object or array, outside any string.
    Container,
    /// Inside a string; `escaped` after a backslash.
    String { escaped: bool },
    /// A top-level number or literal (`true`, `null`, ...): it ends at a separator or at
    /// the end of the bytes received so far.
    Scalar,
}

/// The unparsed input of one connection.
#[derive(Debug)]
pub struct Framer {
    buf: Vec<u8>,
    /// Start of the value being scanned (bytes before it are consumed).
    start: usize,
    /// Next byte to scan.
    pos: usize,
    state: State,
    /// Open brackets of the current value, innermost last.
    stack: Vec<u8>,
    /// Set once an error was returned: nothing more is parsed.
    failed: bool,
}

impl Default for Framer {
    fn default() -> Self {
        Framer {
            buf: Vec::new(),
            start: 0,
            pos: 0,
            state: State::Idle,
            stack: Vec::new(),
            failed: false,
        }
    }
}

fn is_json_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

/// Bytes of numbers and of `true`/`false`/`null`.
fn is_scalar_byte(b: u8) -> bool {
    b.is_ascii_digit() || matches!(b, b'-' | b'+' | b'.' | b'a'..=b'z' | b'E')
}

impl Framer {
    /// Appends bytes read from the socket.
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// The next complete value, `Ok(None)` if more bytes are needed, or the error that ends
    /// the stream (returned once; afterwards always `Ok(None)`).
    pub fn next_value(&mut self) -> Result<Option<Value>, FramingError> {
        if self.failed {
            return Ok(None);
        }
        match self.scan() {
            Ok(Some(end)) => {
                let parsed = serde_json::from_slice(&self.buf[self.start..end]);
                self.start = end;
                self.pos = end;
                self.compact();
                parsed.map(Some).map_err(|e| self.fail(e.to_string()))
            }
            Ok(None) => {
                self.compact();
                if self.state != State::Idle && self.pos - self.start > MAX_REQUEST_BYTES {
                    self.failed = true;
                    return Err(FramingError::TooLarge);
                }
                Ok(None)
            }
            Err(message) => Err(self.fail(message)),
        }
    }

    fn fail(&mut self, message: String) -> FramingError {
        self.failed = true;
        self.buf = Vec::new();
        self.start = 0;
        self.pos = 0;
        FramingError::Syntax(message)
    }

    /// Drops consumed bytes once they are the larger part of the buffer, so a stream of
    /// small requests does not move the tail on every value.
    fn compact(&mut self) {
        if self.start > 0 && self.start >= self.buf.len() / 2 {
            self.buf.drain(..self.start);
            self.pos -= self.start;
            self.start = 0;
        }
    }

    /// Advances over new bytes; returns the end offset of a complete value.
    fn scan(&mut self) -> Result<Option<usize>, String> {
        while self.pos < self.buf.len() {
            let b = self.buf[self.pos];
            let at = self.pos;
            self.pos += 1;
            match self.state {
                State::Idle => {
                    if is_json_space(b) {
                        self.start = self.pos;
                        continue;
                    }
                    self.start = at;
                    match b {
                        b'{' | b'[' => {
                            self.stack.push(b);
                            self.state = State::Container;
                        }
                        b'"' => self.state = State::String { escaped: false },
                        _ if is_scalar_byte(b) => self.state = State::Scalar,
                        _ => return Err(unexpected(b, at)),
                    }
                }
                State::String { escaped: true } => self.state = State::String { escaped: false },
                State::String { escaped: false } => match b {
                    b'\\' => self.state = State::String { escaped: true },
                    b'"' if self.stack.is_empty() => {
                        self.state = State::Idle;
                        return Ok(Some(self.pos));
                    }
                    b'"' => self.state = State::Container,
                    0..=0x1f => return Err(format!("control character in string at byte {at}")),
                    _ => {}
                },
                State::Container => match b {
                    b'"' => self.state = State::String { escaped: false },
                    b'{' | b'[' => {
                        if self.stack.len() >= MAX_DEPTH {
                            return Err(format!("nesting deeper than {MAX_DEPTH} levels"));
                        }
                        self.stack.push(b);
                    }
                    b'}' | b']' => {
                        let open = if b == b'}' { b'{' } else { b'[' };
                        if self.stack.pop() != Some(open) {
                            return Err(format!("mismatched '{}' at byte {at}", b as char));
                        }
                        if self.stack.is_empty() {
                            self.state = State::Idle;
                            return Ok(Some(self.pos));
                        }
                    }
                    b',' | b':' => {}
                    _ if is_json_space(b) || is_scalar_byte(b) => {}
                    _ => return Err(unexpected(b, at)),
                },
                State::Scalar => {
                    if is_scalar_byte(b) {
                        continue;
                    }
                    if is_json_space(b) || matches!(b, b'{' | b'[' | b'"') {
                        // The scalar ended just before this byte, which starts the next value.
                        self.pos = at;
                        self.state = State::Idle;
                        return Ok(Some(at));
                    }
                    return Err(unexpected(b, at));
                }
            }
        }
        if self.state == State::Scalar {
            // A request is never a scalar, so there is nothing to wait for: a number split
            // over two reads is answered as two invalid requests instead of one.
            self.state = State::Idle;
            return Ok(Some(self.pos));
        }
        Ok(None)
    }
}

fn unexpected(b: u8, at: usize) -> String {
    if b.is_ascii_graphic() {
        format!("unexpected '{}' at byte {at}", b as char)
    } else {
        format!("unexpected byte 0x{b:02x} at byte {at}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn all_values(f: &mut Framer) -> Vec<Value> {
        let mut out = Vec::new();
        while let Some(v) = f.next_value().unwrap() {
            out.push(v);
        }
        out
    }

    #[test]
    fn back_to_back_values_with_and_without_separators() {
        let mut f = Framer::default();
        f.push(b"{\"a\":1}{\"b\":[1,{\"c\":\"}\"}]}\n  [1,2] \"s\\\"}\" 42 true");
        assert_eq!(
            all_values(&mut f),
            vec![
                json!({"a": 1}),
                json!({"b": [1, {"c": "}"}]}),
                json!([1, 2]),
                json!("s\"}"),
                json!(42),
                json!(true),
            ]
        );
        assert_eq!(f.buf.len(), f.start, "everything consumed");
    }

    #[test]
    fn a_value_split_at_every_byte_comes_out_whole() {
        let text = serde_json::to_vec_pretty(&json!({
            "jsonrpc": "2.0", "method": "m", "id": 7,
            "params": {"name": "x\\\"y", "list": [1, 2.5, -3e2, null, false]}
        }))
        .unwrap();
        let mut f = Framer::default();
        let mut got = Vec::new();
        for b in &text {
            f.push(std::slice::from_ref(b));
            got.extend(all_values(&mut f));
        }
        assert_eq!(got.len(), 1);
        assert_eq!(got[0]["params"]["name"], "x\\\"y");
        assert_eq!(got[0]["params"]["list"][2], json!(-300.0));
    }

    #[test]
    fn garbage_is_refused_at_once_and_ends_the_stream() {
        for bad in [
            &b"\xff\xfe{}"[..],
            b"{\"a\": \x01}",
            b"{]",
            b"}",
            b"{\"a\":1}}",
            b"{\"a\" 1}",
            b"[tru]",
        ] {
            let mut f = Framer::default();
            f.push(bad);
            let mut result = Ok(None);
            for _ in 0..3 {
                result = f.next_value();
                if result.is_err() {
                    break;
                }
            }
            assert!(
                matches!(result, Err(FramingError::Syntax(_))),
                "{bad:?}: {result:?}"
            );
            f.push(b"{}");
            assert_eq!(f.next_value(), Ok(None), "nothing after an error");
        }
    }

    #[test]
    fn invalid_utf8_inside_a_string_is_a_parse_error() {
        let mut f = Framer::default();
        f.push(b"{\"method\": \"\xc3\x28\"}");
        assert!(matches!(f.next_value(), Err(FramingError::Syntax(_))));
    }

    #[test]
    fn nesting_beyond_the_limit_is_refused_without_waiting_for_the_end() {
        let mut f = Framer::default();
        f.push(&[b'['; MAX_DEPTH]);
        assert_eq!(f.next_value(), Ok(None));
        f.push(b"[");
        assert!(matches!(f.next_value(), Err(FramingError::Syntax(m)) if m.contains("nesting")));
    }

    #[test]
    fn oversized_value_is_refused_before_it_is_complete() {
        let mut f = Framer::default();
        f.push(b"{\"params\": \"");
        let chunk = vec![b'a'; 1 << 20];
        let mut outcome = Ok(None);
        for _ in 0..17 {
            f.push(&chunk);
            outcome = f.next_value();
            if outcome.is_err() {
                break;
            }
        }
        assert_eq!(outcome, Err(FramingError::TooLarge));
    }

    #[test]
    fn whitespace_between_values_is_not_counted_against_the_limit() {
        let mut f = Framer::default();
        for _ in 0..20 {
            f.push(&vec![b'\n'; 1 << 20]);
            assert_eq!(f.next_value(), Ok(None));
        }
        f.push(b"{}");
        assert_eq!(f.next_value(), Ok(Some(json!({}))));
    }
}
