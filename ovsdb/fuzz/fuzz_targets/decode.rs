//! Feeds arbitrary bytes, split into two reads at a point chosen by the input, through the
//! JSON-RPC framer and the message parser: they must return values or errors, never panic,
//! and every value they return must survive an encode/decode round trip.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use tokio_util::codec::{Decoder, Encoder};
use ycloud_ovsdb::codec::JsonCodec;
use ycloud_ovsdb::jsonrpc::Message;

fuzz_target!(|data: &[u8]| {
    let Some((&split, rest)) = data.split_first() else { return };
    let at = (split as usize).min(rest.len());
    let mut codec = JsonCodec::new(4096);
    let mut buf = BytesMut::new();
    let mut values = Vec::new();
    'reads: for chunk in [&rest[..at], &rest[at..]] {
        buf.extend_from_slice(chunk);
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(v)) => values.push(v),
                Ok(None) => break,
                Err(_) => break 'reads,
            }
        }
    }
    for v in values {
        let mut out = BytesMut::new();
        JsonCodec::default().encode(&v, &mut out).expect("a decoded value encodes");
        let again = JsonCodec::default().decode(&mut out).expect("re-decodes").expect("complete");
        assert_eq!(again, v);
        if let Ok(m) = Message::from_value(v) {
            assert_eq!(Message::from_value(m.to_value()).expect("round trip"), m);
        }
    }
});
