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

use bytes::{BufMut, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

/// Default limit for one message: the initial monitor reply of a large NB database is one
/// JSON value, so this is generous (100k load balancers with backends are ~100 MiB).
pub const DEFAULT_MAX_MESSAGE: usize = 512 * 1024 * 1024;

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

impl Decoder for JsonCodec {
    type Item = serde_json::Value;
    type Error = CodecError;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Self::Item>, CodecError> {
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
                            let offset = self.consumed;
                            self.consumed += frame.len() as u64;
                            self.scan = Scan::default();
                            return serde_json::from_slice(&frame)
                                .map(Some)
                                .map_err(|source| CodecError::Json { offset, source });
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

    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<Self::Item>, CodecError> {
        match self.decode(buf)? {
            Some(v) => Ok(Some(v)),
            None if buf.iter().all(|&b| Self::is_ws(b)) => Ok(None),
            None => Err(CodecError::Truncated { pending: buf.len() }),
        }
    }
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
}
