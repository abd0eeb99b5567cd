//! JSON-RPC 1.0 messages as OVSDB uses them (RFC 7047 §4): requests `{method, params, id}`,
//! notifications (a request with `"id": null`) and responses `{result, error, id}`.
//!
//! Written out by hand rather than with a JSON-RPC 2.0 library because ovsdb-server drops a
//! connection whose requests carry `"jsonrpc"`, and its responses always carry both `result`
//! and `error` (one of them `null`), which 2.0 parsers reject (see docs/adr/0001).

use serde_json::{Map, Value, json};

/// One message on an OVSDB connection.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    /// A call that expects a response with the same `id`.
    Request {
        method: String,
        params: Value,
        id: Value,
    },
    /// A request with `"id": null`: no response (`update*`, `locked`, `stolen`, `cancel`).
    Notification { method: String, params: Value },
    /// The answer to a request: exactly one of `result` / `error` is non-null.
    Response {
        result: Value,
        error: Value,
        id: Value,
    },
}

/// Why a JSON value is not a JSON-RPC 1.0 message.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MessageError {
    #[error("a JSON-RPC message must be an object, got {0}")]
    NotAnObject(String),
    #[error("\"method\" must be a string, got {0}")]
    BadMethod(String),
    #[error("\"params\" must be an array, got {0}")]
    BadParams(String),
    #[error("a response needs an \"id\": {0}")]
    MissingId(String),
    #[error("neither a request (\"method\") nor a response (\"result\"/\"error\"): {0}")]
    Unknown(String),
}

/// Shortens a value for an error message: a garbage message may be megabytes long.
pub(crate) fn excerpt(v: &Value) -> String {
    let s = v.to_string();
    if s.len() <= 200 {
        return s;
    }
    let mut end = 200;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes)", &s[..end], s.len())
}

impl Message {
    pub fn request(method: impl Into<String>, params: Value, id: Value) -> Self {
        Message::Request {
            method: method.into(),
            params,
            id,
        }
    }

    pub fn notification(method: impl Into<String>, params: Value) -> Self {
        Message::Notification {
            method: method.into(),
            params,
        }
    }

    pub fn ok(result: Value, id: Value) -> Self {
        Message::Response {
            result,
            error: Value::Null,
            id,
        }
    }

    pub fn err(error: Value, id: Value) -> Self {
        Message::Response {
            result: Value::Null,
            error,
            id,
        }
    }

    /// Parses a decoded JSON value. Unknown extra keys are ignored (RFC 7047 does not forbid
    /// them and a newer server may add some).
    pub fn from_value(v: Value) -> Result<Self, MessageError> {
        let Value::Object(mut obj) = v else {
            return Err(MessageError::NotAnObject(excerpt(&v)));
        };
        if let Some(method) = obj.remove("method") {
            let Value::String(method) = method else {
                return Err(MessageError::BadMethod(excerpt(&method)));
            };
            let params = obj.remove("params").unwrap_or(Value::Array(Vec::new()));
            if !params.is_array() {
                return Err(MessageError::BadParams(excerpt(&params)));
            }
            return Ok(match obj.remove("id") {
                None | Some(Value::Null) => Message::Notification { method, params },
                Some(id) => Message::Request { method, params, id },
            });
        }
        if obj.contains_key("result") || obj.contains_key("error") {
            let id = match obj.remove("id") {
                Some(id) if !id.is_null() => id,
                _ => return Err(MessageError::MissingId(excerpt(&Value::Object(obj)))),
            };
            let result = obj.remove("result").unwrap_or(Value::Null);
            let error = obj.remove("error").unwrap_or(Value::Null);
            return Ok(Message::Response { result, error, id });
        }
        Err(MessageError::Unknown(excerpt(&Value::Object(obj))))
    }

    /// The wire form. Responses always carry both `result` and `error` (RFC 7047 §4.1.x) and
    /// notifications carry `"id": null`; nothing carries `"jsonrpc"`.
    pub fn to_value(&self) -> Value {
        match self {
            Message::Request { method, params, id } => {
                json!({"method": method, "params": params, "id": id})
            }
            Message::Notification { method, params } => {
                json!({"method": method, "params": params, "id": null})
            }
            Message::Response { result, error, id } => {
                let mut m = Map::with_capacity(3);
                m.insert("result".into(), result.clone());
                m.insert("error".into(), error.clone());
                m.insert("id".into(), id.clone());
                Value::Object(m)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_response_with_a_null_error_is_a_success_response() {
        let m = Message::from_value(json!({"id": 3, "result": ["OVN_Northbound"], "error": null}))
            .unwrap();
        assert_eq!(m, Message::ok(json!(["OVN_Northbound"]), json!(3)));
    }

    #[test]
    fn a_request_with_a_null_id_is_a_notification() {
        let m = Message::from_value(json!({"method": "update2", "params": ["m1", {}], "id": null}))
            .unwrap();
        assert_eq!(m, Message::notification("update2", json!(["m1", {}])));
    }

    #[test]
    fn the_servers_echo_request_keeps_its_string_id() {
        let m = Message::from_value(json!({"method": "echo", "params": [], "id": "echo"})).unwrap();
        assert_eq!(m, Message::request("echo", json!([]), json!("echo")));
    }

    #[test]
    fn requests_are_written_without_a_jsonrpc_member() {
        let v = Message::request("list_dbs", json!([]), json!(1)).to_value();
        assert_eq!(v, json!({"method": "list_dbs", "params": [], "id": 1}));
        let v = Message::ok(json!([]), json!("echo")).to_value();
        assert_eq!(v, json!({"result": [], "error": null, "id": "echo"}));
    }

    #[test]
    fn malformed_messages_are_errors_that_show_the_message() {
        let cases = [
            (json!([1]), "must be an object"),
            (json!({"method": 5, "id": 1}), "\"method\" must be a string"),
            (
                json!({"method": "x", "params": {}, "id": 1}),
                "\"params\" must be an array",
            ),
            (json!({"result": 1, "error": null}), "needs an \"id\""),
            (json!({"foo": 1}), "neither a request"),
        ];
        for (v, want) in cases {
            let err = Message::from_value(v.clone()).unwrap_err().to_string();
            assert!(err.contains(want), "{v}: {err}");
        }
    }

    fn arb_message() -> impl Strategy<Value = Message> {
        let id = prop_oneof![
            any::<u32>().prop_map(|n| json!(n)),
            "[a-z]{1,5}".prop_map(Value::from)
        ];
        let params = prop::collection::vec("[a-z\"{}]{0,5}".prop_map(Value::from), 0..3)
            .prop_map(Value::Array);
        prop_oneof![
            ("[a-z_]{1,10}", params.clone(), id.clone())
                .prop_map(|(m, p, i)| Message::request(m, p, i)),
            ("[a-z_]{1,10}", params.clone()).prop_map(|(m, p)| Message::notification(m, p)),
            (params.clone(), id.clone()).prop_map(|(p, i)| Message::ok(p, i)),
            ("[a-z ]{1,10}", id).prop_map(|(e, i)| Message::err(json!({"error": e}), i)),
        ]
    }

    proptest! {
        #[test]
        fn messages_survive_a_round_trip_through_their_wire_form(m in arb_message()) {
            prop_assert_eq!(Message::from_value(m.to_value()).unwrap(), m);
        }
    }
}
