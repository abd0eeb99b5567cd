//! The JSON-RPC 1.0 framer: OVSDB sends concatenated JSON objects on a byte stream with no
//! delimiter or length prefix, and a read may end anywhere inside a value (even inside a
//! string, an escape or a multi-byte UTF-8 character).
//!
//! The decoder scans each byte once, keeping bracket depth and string/escape state across
//! reads, and only hands a complete top-level value to `serde_json`. Brackets inside strings
//! (`"{"`, `"\"}"`) do not count. Multi-byte UTF-8 needs no special care: none of its bytes
//! is ASCII, so it can never look like a bracket, quote or backslash.
//!
//! What is rejected, with an error that ends the connection (the stream cannot be
//! resynchronised after garbage): a top-level value that is not an object or array, a value
//! larger than the size limit (checked while scanning, so a peer cannot make us buffer
//! without bound), and anything `serde_json` refuses once a value is delimited.

use bytes::{BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

/// Default limit for one message: the initial monitor reply of a large NB database is one
/// JSON value, so this is generous (100k load balancers with backends are ~100 MiB).
pub const DEFAULT_MAX_MESSAGE: usize = 512 * 1024 * 1024;

/// A frame larger than this leaves the read buffer to be replaced by a small one (see
/// `JsonCodec::next_frame`), and a write buffer grown past it is dropped once flushed;
/// smaller ones are reused.
pub(crate) const SHRINK_AFTER: usize = 1024 * 1024;

/// The capacity a replaced read buffer starts with (what the client's reader starts with).
pub const READ_CAPACITY: usize = 64 * 1024;

/// Why the byte stream could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("message larger than the {limit}-byte limit (at least {seen} bytes so far)")]
    TooLarge { limit: usize, seen: usize },
    #[error(
        "expected '{{' or '[' at the start of a message at stream byte {offset}, found {found}"
    )]
    BadStart { offset: u64, found: String },
    #[error("invalid JSON in the message starting at stream byte {offset}: {source}")]
    Json {
        offset: u64,
        #[source]
        source: serde_json::Error,
    },
    #[error("connection closed in the middle of a message ({pending} bytes unparsed)")]
    Truncated { pending: usize },
    #[error("encoding a message: {0}")]
    Encode(#[source] serde_json::Error),
}

/// Scanner state for the message currently being received.
#[derive(Debug, Default, Clone)]
struct Scan {
    /// Bytes of `buf` already scanned (all belong to the current message once `depth > 0`).
    pos: usize,
    depth: usize,
    in_string: bool,
    escape: bool,
}

/// Frames a byte stream into `serde_json::Value`s and writes values back.
#[derive(Debug, Clone)]
pub struct JsonCodec {
    max_len: usize,
    scan: Scan,
    /// Stream offset of `buf[0]`, for error messages that say where the garbage was.
    consumed: u64,
}

impl Default for JsonCodec {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_MESSAGE)
    }
}

impl JsonCodec {
    pub fn new(max_len: usize) -> Self {
        JsonCodec {
            max_len,
            scan: Scan::default(),
            consumed: 0,
        }
    }

    fn is_ws(b: u8) -> bool {
        matches!(b, b' ' | b'\t' | b'\n' | b'\r')
    }
}

impl JsonCodec {
    /// Cuts the next complete top-level value out of `buf`: its stream offset and bytes.
    fn next_frame(&mut self, buf: &mut BytesMut) -> Result<Option<(u64, BytesMut)>, CodecError> {
        // Skip whitespace between messages so it never counts against the limit.
        if self.scan.depth == 0 {
            let ws = buf.iter().take_while(|&&b| Self::is_ws(b)).count();
            if ws > 0 {
                let _ = buf.split_to(ws);
                self.consumed += ws as u64;
            }
            self.scan.pos = 0;
        }
        let s = &mut self.scan;
        let bytes = &buf[..];
        let mut i = s.pos;
        while i < bytes.len() {
            let b = bytes[i];
            if s.in_string {
                if s.escape {
                    s.escape = false;
                } else if b == b'\\' {
                    s.escape = true;
                } else if b == b'"' {
                    s.in_string = false;
                }
            } else if s.depth == 0 {
                // First byte of a message (whitespace was skipped above).
                if b != b'{' && b != b'[' {
                    return Err(CodecError::BadStart {
                        offset: self.consumed + i as u64,
                        found: describe_byte(b),
                    });
                }
                s.depth = 1;
            } else {
                match b {
                    b'"' => s.in_string = true,
                    b'{' | b'[' => s.depth += 1,
                    b'}' | b']' => {
                        s.depth -= 1;
                        if s.depth == 0 {
                            let frame = buf.split_to(i + 1);
                            if frame.len() > SHRINK_AFTER {
                                // The frame shares the buffer's allocation, and once the
                                // frame is dropped the buffer would reclaim all of it and
                                // keep the largest message's size for the connection's
                                // life (17 MB after a 10,000-service monitor reply). Move
                                // what follows the frame into a small buffer of its own.
                                let small = BytesMut::with_capacity(buf.len().max(READ_CAPACITY));
                                let rest = std::mem::replace(buf, small);
                                buf.extend_from_slice(&rest);
                            }
                            let offset = self.consumed;
                            self.consumed += frame.len() as u64;
                            self.scan = Scan::default();
                            return Ok(Some((offset, frame)));
                        }
                    }
                    _ => {}
                }
            }
            i += 1;
            if i > self.max_len {
                return Err(CodecError::TooLarge {
                    limit: self.max_len,
                    seen: i,
                });
            }
        }
        s.pos = i;
        // Reserve for the rest of a big message in one go instead of doubling repeatedly.
        if s.depth > 0 && buf.capacity() - buf.len() < 8192 {
            buf.reserve(buf.len().clamp(8192, 16 * 1024 * 1024));
        }
        Ok(None)
    }
}

impl Decoder for JsonCodec {
    type Item = serde_json::Value;
    type Error = CodecError;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Self::Item>, CodecError> {
        match self.next_frame(buf)? {
            None => Ok(None),
            Some((offset, frame)) => serde_json::from_slice(&frame)
                .map(Some)
                .map_err(|source| CodecError::Json { offset, source }),
        }
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<Self::Item>, CodecError> {
        match self.decode(buf)? {
            Some(v) => Ok(Some(v)),
            None if buf.iter().all(|&b| Self::is_ws(b)) => Ok(None),
            None => Err(CodecError::Truncated { pending: buf.len() }),
        }
    }
}

/// One complete top-level JSON value as received, not parsed: valid UTF-8, balanced
/// brackets, otherwise unchecked. The reader parses the small parts of a message and hands
/// big members (a monitor reply's `result`, an update's table-updates) on as text, so the
/// cache can read them without a `serde_json::Value` tree in between.
#[derive(Debug, Clone)]
pub struct Frame {
    /// Stream offset of the first byte, for error messages.
    pub offset: u64,
    bytes: Bytes,
}

impl Frame {
    pub fn as_str(&self) -> &str {
        // Checked when the frame was cut (`FrameCodec::decode`); re-checking a 30 MB frame
        // costs milliseconds and keeps this crate free of `unsafe`.
        std::str::from_utf8(&self.bytes).expect("frames are checked for UTF-8 when cut")
    }

    /// A part of this frame (a byte range of [`Frame::as_str`] on character boundaries).
    pub fn slice(&self, range: std::ops::Range<usize>) -> RawJson {
        RawJson {
            bytes: self.bytes.slice(range),
        }
    }
}

/// A JSON value kept as text: a slice of a received [`Frame`] (shared, not copied).
#[derive(Clone)]
pub struct RawJson {
    bytes: Bytes,
}

impl std::fmt::Debug for RawJson {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RawJson({})", excerpt_str(self.as_str()))
    }
}

impl RawJson {
    /// Text that is not part of a frame (tests, and `null` for a missing member).
    pub fn from_static(text: &'static str) -> RawJson {
        RawJson {
            bytes: Bytes::from_static(text.as_bytes()),
        }
    }

    /// Owned text (tests, and a value that had to be re-serialized).
    pub fn from_string(text: String) -> RawJson {
        RawJson {
            bytes: Bytes::from(text.into_bytes()),
        }
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.bytes).expect("cut from a UTF-8 frame on char boundaries")
    }

    /// Parses the text (for the small values that are handled as trees).
    pub fn to_value(&self) -> Result<serde_json::Value, serde_json::Error> {
        serde_json::from_str(self.as_str())
    }

    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// The elements of a JSON array, each as text (not parsed).
    pub fn elements(&self) -> Result<Vec<RawJson>, ScanError> {
        let text = self.as_str();
        Ok(array_elements(text)?
            .into_iter()
            .map(|r| RawJson {
                bytes: self.bytes.slice(r),
            })
            .collect())
    }
}

/// The start of `text` for an error message: a bad message may be megabytes long.
pub(crate) fn excerpt_str(text: &str) -> String {
    if text.len() <= 200 {
        return text.to_owned();
    }
    let mut end = 200;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes)", &text[..end], text.len())
}

/// Frames a byte stream like [`JsonCodec`] but hands out each message unparsed, as a
/// [`Frame`] (checked for UTF-8 only).
#[derive(Debug, Clone, Default)]
pub struct FrameCodec(JsonCodec);

impl FrameCodec {
    pub fn new(max_len: usize) -> Self {
        FrameCodec(JsonCodec::new(max_len))
    }
}

impl Decoder for FrameCodec {
    type Item = Frame;
    type Error = CodecError;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, CodecError> {
        let Some((offset, frame)) = self.0.next_frame(buf)? else {
            return Ok(None);
        };
        if let Err(e) = std::str::from_utf8(&frame) {
            return Err(CodecError::Json {
                offset,
                source: <serde_json::Error as serde::de::Error>::custom(format!(
                    "invalid UTF-8 at byte {} of the message",
                    e.valid_up_to()
                )),
            });
        }
        Ok(Some(Frame {
            offset,
            bytes: frame.freeze(),
        }))
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, CodecError> {
        match self.decode(buf)? {
            Some(v) => Ok(Some(v)),
            None if buf.iter().all(|&b| JsonCodec::is_ws(b)) => Ok(None),
            None => Err(CodecError::Truncated { pending: buf.len() }),
        }
    }
}

/// Why the top level of a frame could not be split into members or elements.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{what} at byte {at}")]
pub struct ScanError {
    pub what: String,
    pub at: usize,
}

fn scan_err(what: impl Into<String>, at: usize) -> ScanError {
    ScanError {
        what: what.into(),
        at,
    }
}

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && JsonCodec::is_ws(b[i]) {
        i += 1;
    }
    i
}

/// End (exclusive) of the string starting with the quote at `i`.
fn string_end(b: &[u8], i: usize) -> Result<usize, ScanError> {
    let mut j = i + 1;
    while j < b.len() {
        match b[j] {
            b'\\' => j += 2,
            b'"' => return Ok(j + 1),
            _ => j += 1,
        }
    }
    Err(scan_err("unterminated string", i))
}

/// End (exclusive) of the value starting at `i`. Only the structure is followed (strings,
/// bracket depth); whoever parses the value checks it.
fn value_end(b: &[u8], i: usize) -> Result<usize, ScanError> {
    match b.get(i) {
        None => Err(scan_err("expected a value", i)),
        Some(b'"') => string_end(b, i),
        Some(b'{' | b'[') => {
            let mut depth = 0usize;
            let mut j = i;
            while j < b.len() {
                match b[j] {
                    b'"' => {
                        j = string_end(b, j)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Ok(j + 1);
                        }
                    }
                    _ => {}
                }
                j += 1;
            }
            Err(scan_err("unbalanced brackets", i))
        }
        Some(_) => {
            let mut j = i;
            while j < b.len() && !matches!(b[j], b',' | b'}' | b']') && !JsonCodec::is_ws(b[j]) {
                j += 1;
            }
            if j == i {
                return Err(scan_err("expected a value", i));
            }
            Ok(j)
        }
    }
}

/// The members of the JSON object `text`: each key (unescaped) and the byte range of its
/// value, in order. Values are not parsed.
pub fn object_members(text: &str) -> Result<Vec<(String, std::ops::Range<usize>)>, ScanError> {
    let b = text.as_bytes();
    let mut i = skip_ws(b, 0);
    if b.get(i) != Some(&b'{') {
        return Err(scan_err("expected '{'", i));
    }
    i = skip_ws(b, i + 1);
    let mut out = Vec::new();
    if b.get(i) == Some(&b'}') {
        i += 1;
    } else {
        loop {
            if b.get(i) != Some(&b'"') {
                return Err(scan_err("expected a member name", i));
            }
            let kend = string_end(b, i)?;
            let key: String = serde_json::from_str(&text[i..kend])
                .map_err(|e| scan_err(format!("bad member name: {e}"), i))?;
            i = skip_ws(b, kend);
            if b.get(i) != Some(&b':') {
                return Err(scan_err("expected ':'", i));
            }
            i = skip_ws(b, i + 1);
            let vend = value_end(b, i)?;
            out.push((key, i..vend));
            i = skip_ws(b, vend);
            match b.get(i) {
                Some(b',') => i = skip_ws(b, i + 1),
                Some(b'}') => {
                    i += 1;
                    break;
                }
                _ => return Err(scan_err("expected ',' or '}'", i)),
            }
        }
    }
    if skip_ws(b, i) != b.len() {
        return Err(scan_err("trailing characters", i));
    }
    Ok(out)
}

/// The byte ranges of the elements of the JSON array `text`, in order. Elements are not
/// parsed.
pub fn array_elements(text: &str) -> Result<Vec<std::ops::Range<usize>>, ScanError> {
    let b = text.as_bytes();
    let mut i = skip_ws(b, 0);
    if b.get(i) != Some(&b'[') {
        return Err(scan_err("expected '['", i));
    }
    i = skip_ws(b, i + 1);
    let mut out = Vec::new();
    if b.get(i) == Some(&b']') {
        i += 1;
    } else {
        loop {
            let vend = value_end(b, i)?;
            out.push(i..vend);
            i = skip_ws(b, vend);
            match b.get(i) {
                Some(b',') => i = skip_ws(b, i + 1),
                Some(b']') => {
                    i += 1;
                    break;
                }
                _ => return Err(scan_err("expected ',' or ']'", i)),
            }
        }
    }
    if skip_ws(b, i) != b.len() {
        return Err(scan_err("trailing characters", i));
    }
    Ok(out)
}

fn describe_byte(b: u8) -> String {
    if b.is_ascii_graphic() {
        format!("'{}'", b as char)
    } else {
        format!("byte 0x{b:02x}")
    }
}

impl Encoder<&serde_json::Value> for JsonCodec {
    type Error = CodecError;

    fn encode(&mut self, item: &serde_json::Value, dst: &mut BytesMut) -> Result<(), CodecError> {
        serde_json::to_writer(dst.writer(), item).map_err(CodecError::Encode)
    }
}

impl Encoder<serde_json::Value> for JsonCodec {
    type Error = CodecError;

    fn encode(&mut self, item: serde_json::Value, dst: &mut BytesMut) -> Result<(), CodecError> {
        self.encode(&item, dst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    /// Feeds `chunks` one by one, as separate reads, and collects what decodes.
    fn decode_chunks(
        codec: &mut JsonCodec,
        chunks: &[&[u8]],
    ) -> Result<Vec<serde_json::Value>, CodecError> {
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for c in chunks {
            buf.extend_from_slice(c);
            while let Some(v) = codec.decode(&mut buf)? {
                out.push(v);
            }
        }
        if let Some(v) = codec.decode_eof(&mut buf)? {
            out.push(v);
        }
        Ok(out)
    }

    #[test]
    fn concatenated_messages_without_delimiters_decode_one_by_one() {
        let stream =
            br#"{"id":1,"result":[],"error":null}{"method":"echo","params":[],"id":"echo"} [1,2]"#;
        let out = decode_chunks(&mut JsonCodec::default(), &[stream]).unwrap();
        assert_eq!(
            out,
            vec![
                json!({"id":1,"result":[],"error":null}),
                json!({"method":"echo","params":[],"id":"echo"}),
                json!([1, 2]),
            ]
        );
    }

    #[test]
    fn brackets_and_escaped_quotes_inside_strings_do_not_end_a_message() {
        let stream = br#"{"a":"}{][\"}\\","b":"\\\"{"}{"c":1}"#;
        let out = decode_chunks(&mut JsonCodec::default(), &[stream]).unwrap();
        assert_eq!(
            out,
            vec![json!({"a":"}{][\"}\\","b":"\\\"{"}), json!({"c":1})]
        );
    }

    #[test]
    fn a_message_split_inside_an_escape_and_a_utf8_character_decodes() {
        let msg = r#"{"s":"é\"ü{"}"#.as_bytes();
        for cut in 1..msg.len() {
            let out =
                decode_chunks(&mut JsonCodec::default(), &[&msg[..cut], &msg[cut..]]).unwrap();
            assert_eq!(out, vec![json!({"s":"é\"ü{"})], "cut at {cut}");
        }
    }

    #[test]
    fn a_scalar_at_top_level_is_an_error_naming_the_offset() {
        let err = decode_chunks(&mut JsonCodec::default(), &[b"{} 42"]).unwrap_err();
        assert!(
            matches!(err, CodecError::BadStart { offset: 3, .. }),
            "{err}: the second message starts at byte 3"
        );
    }

    #[test]
    fn invalid_json_inside_balanced_brackets_is_an_error() {
        let err = decode_chunks(&mut JsonCodec::default(), &[b"{\"a\" 1}"]).unwrap_err();
        assert!(matches!(err, CodecError::Json { offset: 0, .. }), "{err}");
    }

    #[test]
    fn a_message_over_the_limit_is_rejected_before_it_is_complete() {
        let mut codec = JsonCodec::new(100);
        let mut buf = BytesMut::from(&b"[\""[..]);
        buf.extend_from_slice(&[b'x'; 200]);
        let err = codec.decode(&mut buf).unwrap_err();
        assert!(
            matches!(err, CodecError::TooLarge { limit: 100, .. }),
            "{err}"
        );
    }

    #[test]
    fn a_big_message_does_not_leave_the_read_buffer_in_its_allocation() {
        // A 3 MiB message arriving in 64 KiB reads, then the start of the next one: the
        // way a cold start's monitor reply comes in.
        let big = format!("[\"{}\"]", "x".repeat(3 * 1024 * 1024));
        let mut codec = FrameCodec::default();
        let mut buf = BytesMut::with_capacity(READ_CAPACITY);
        let mut frames = Vec::new();
        for chunk in big.as_bytes().chunks(READ_CAPACITY) {
            buf.extend_from_slice(chunk);
            frames.extend(codec.decode(&mut buf).unwrap());
        }
        buf.extend_from_slice(b" {\"next\"");
        frames.extend(codec.decode(&mut buf).unwrap());
        assert_eq!(frames.len(), 1);
        assert_eq!(frames[0].as_str(), big);
        // Cut in place, the rest of the stream would start right after the frame, in
        // the allocation the frame came from, and keep all of it alive after the frame
        // is dropped (`capacity()` does not show it: only the reserve after the next
        // read would).
        let frame_end = frames[0].bytes.as_ptr_range().end;
        assert_ne!(
            buf.as_ptr(),
            frame_end,
            "the read buffer still lives in the big message's allocation"
        );
        assert!(buf.capacity() <= 2 * READ_CAPACITY, "{}", buf.capacity());
        drop(frames);
        // What followed the big message is kept, and the stream goes on.
        buf.extend_from_slice(b": 1}");
        let next = codec.decode(&mut buf).unwrap().expect("the next message");
        assert_eq!(next.as_str(), "{\"next\": 1}");
    }

    #[test]
    fn eof_inside_a_message_is_a_truncation_error() {
        let err = decode_chunks(&mut JsonCodec::default(), &[b"{\"a\":[1,"]).unwrap_err();
        assert!(matches!(err, CodecError::Truncated { pending: 8 }), "{err}");
    }

    #[test]
    fn encoding_then_decoding_gives_back_the_value() {
        let v = json!({"method":"transact","params":["OVN_Northbound",{"op":"comment","comment":"}\"{"}],"id":7});
        let mut buf = BytesMut::new();
        JsonCodec::default().encode(&v, &mut buf).unwrap();
        assert_eq!(JsonCodec::default().decode(&mut buf).unwrap(), Some(v));
        assert!(buf.is_empty());
    }

    fn arb_json() -> impl Strategy<Value = serde_json::Value> {
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            // Strings heavy in the characters the scanner cares about.
            "[\\\\\"{}\\[\\]a-zé€ \n\t]{0,12}".prop_map(serde_json::Value::from),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::Array),
                prop::collection::btree_map("[a-z{}\"\\\\]{0,6}", inner, 0..6)
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn arb_message() -> impl Strategy<Value = serde_json::Value> {
        prop_oneof![
            prop::collection::vec(arb_json(), 0..4).prop_map(serde_json::Value::Array),
            arb_json().prop_map(|v| json!({"method":"update","params":[v],"id":null})),
        ]
    }

    proptest! {
        #[test]
        fn any_split_of_a_valid_stream_decodes_to_the_same_values(
            msgs in prop::collection::vec(arb_message(), 1..5),
            cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..8),
            pretty in any::<bool>(),
        ) {
            let mut stream = Vec::new();
            for m in &msgs {
                if pretty {
                    stream.extend(serde_json::to_vec_pretty(m).unwrap());
                    stream.push(b'\n');
                } else {
                    stream.extend(serde_json::to_vec(m).unwrap());
                }
            }
            let mut points: Vec<usize> = cuts.iter().map(|c| c.index(stream.len() + 1)).collect();
            points.sort_unstable();
            let mut chunks = Vec::new();
            let mut last = 0;
            for p in points {
                chunks.push(&stream[last..p]);
                last = p;
            }
            chunks.push(&stream[last..]);
            let out = decode_chunks(&mut JsonCodec::default(), &chunks).unwrap();
            prop_assert_eq!(out, msgs);
        }

        #[test]
        fn arbitrary_bytes_give_values_or_an_error_but_never_panic(
            bytes in prop::collection::vec(any::<u8>(), 0..256),
            split in any::<prop::sample::Index>(),
        ) {
            let at = split.index(bytes.len() + 1);
            let _ = decode_chunks(&mut JsonCodec::new(128), &[&bytes[..at], &bytes[at..]]);
        }

        #[test]
        fn json_like_garbage_never_panics(
            s in "[\\[\\]{}\",:\\\\a0-9 ]{0,64}",
        ) {
            let _ = decode_chunks(&mut JsonCodec::default(), &[s.as_bytes()]);
        }
    }

    proptest! {
        #[test]
        fn the_members_of_an_object_split_at_the_top_level_parse_back_to_the_object(
            m in prop::collection::btree_map("[a-z{}\"\\\\é]{0,6}", arb_json(), 0..6),
            pretty in any::<bool>(),
        ) {
            let obj = serde_json::Value::Object(m.into_iter().collect());
            let text = if pretty {
                serde_json::to_string_pretty(&obj).unwrap()
            } else {
                serde_json::to_string(&obj).unwrap()
            };
            let members = object_members(&text).unwrap();
            let back: serde_json::Map<String, serde_json::Value> = members
                .into_iter()
                .map(|(k, r)| (k, serde_json::from_str(&text[r]).unwrap()))
                .collect();
            prop_assert_eq!(serde_json::Value::Object(back), obj);
        }

        #[test]
        fn the_elements_of_an_array_split_at_the_top_level_parse_back_to_the_array(
            v in prop::collection::vec(arb_json(), 0..6),
            pretty in any::<bool>(),
        ) {
            let arr = serde_json::Value::Array(v);
            let text = if pretty {
                serde_json::to_string_pretty(&arr).unwrap()
            } else {
                serde_json::to_string(&arr).unwrap()
            };
            let back: Vec<serde_json::Value> = array_elements(&text)
                .unwrap()
                .into_iter()
                .map(|r| serde_json::from_str(&text[r]).unwrap())
                .collect();
            prop_assert_eq!(serde_json::Value::Array(back), arr);
        }

        #[test]
        fn splitting_garbage_is_an_error_or_ranges_inside_the_text_but_never_a_panic(
            s in "[{}\\[\\]\",:a1 \\\\]{0,40}",
        ) {
            if let Ok(members) = object_members(&s) {
                for (_, r) in members {
                    prop_assert!(r.end <= s.len());
                }
            }
            if let Ok(elements) = array_elements(&s) {
                for r in elements {
                    prop_assert!(r.end <= s.len());
                }
            }
        }
    }

    #[test]
    fn a_malformed_top_level_is_an_error_naming_the_byte() {
        assert_eq!(
            object_members(r#"{"a" 1}"#).unwrap_err().to_string(),
            "expected ':' at byte 5"
        );
        assert_eq!(
            object_members(r#"{"a":1,}"#).unwrap_err().to_string(),
            "expected a member name at byte 7"
        );
        assert_eq!(
            array_elements("[1,2] x").unwrap_err().to_string(),
            "trailing characters at byte 5"
        );
        assert_eq!(
            array_elements(r#"["a]"#).unwrap_err().to_string(),
            "unterminated string at byte 1"
        );
    }

    #[test]
    fn a_frame_is_the_exact_text_of_one_message_and_invalid_utf8_is_an_error_with_its_offset() {
        let mut codec = FrameCodec::default();
        let mut buf = BytesMut::from(&b" {\"a\": [1, \"}\"]}\n[2]"[..]);
        let f = codec.decode(&mut buf).unwrap().unwrap();
        assert_eq!((f.offset, f.as_str()), (1, "{\"a\": [1, \"}\"]}"));
        let f = codec.decode(&mut buf).unwrap().unwrap();
        assert_eq!((f.offset, f.as_str()), (17, "[2]"));
        let mut buf = BytesMut::from(&b"{\"a\":\"\xff\"}"[..]);
        let err = FrameCodec::default().decode(&mut buf).unwrap_err();
        assert!(matches!(&err, CodecError::Json { offset: 0, .. }), "{err}");
        assert!(err.to_string().contains("invalid UTF-8 at byte 6"), "{err}");
    }
}
