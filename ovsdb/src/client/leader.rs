//! Which cluster member is usable: our database's row in `_Server.Database`, monitored
//! with plain `monitor` (its `update` carries whole rows, so no diff logic is needed here).

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::Value;

pub(super) const SERVER_MONITOR_ID: &str = "ycloud-server";

/// Watches our database's row in `_Server.Database` on the current connection.
pub(super) struct ServerWatch {
    pub(super) db: String,
    pub(super) leader_only: bool,
    pub(super) row: Mutex<Option<serde_json::Map<String, Value>>>,
}

impl ServerWatch {
    /// Applies a plain-`monitor` update of `_Server.Database`; `Err(reason)` means this
    /// server is no longer usable.
    pub(super) fn update(&self, max_index: &AtomicU64, updates: &Value) -> Result<(), String> {
        let mut row = self.row.lock().unwrap_or_else(|e| e.into_inner());
        for (_, ch) in updates["Database"].as_object().into_iter().flatten() {
            match ch.get("new").and_then(Value::as_object) {
                Some(new) if new.get("name").and_then(Value::as_str) == Some(&self.db) => {
                    *row = Some(new.clone());
                }
                Some(_) => {}
                None => {
                    if ch["old"]["name"].as_str() == Some(&self.db) {
                        *row = None;
                    }
                }
            }
        }
        let Some(r) = row.as_ref() else {
            return Err(format!("database {} not served here", self.db));
        };
        let clustered = r.get("model").and_then(Value::as_str) == Some("clustered");
        if !clustered {
            return Ok(());
        }
        if r.get("connected").and_then(Value::as_bool) != Some(true) {
            return Err("member is not connected to its cluster".into());
        }
        if self.leader_only && r.get("leader").and_then(Value::as_bool) != Some(true) {
            return Err("member is not the leader".into());
        }
        // `index` is an optional integer: a bare number, or ["set", []] when unknown.
        if let Some(index) = r.get("index").and_then(Value::as_u64) {
            let seen = max_index.fetch_max(index, Ordering::Relaxed);
            if index < seen {
                return Err(format!(
                    "member is stale: log index {index} < {seen} seen before"
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn db_row(model: &str, connected: bool, leader: bool, index: Value) -> Value {
        json!({"Database": {"6d3c1d5e-0000-0000-0000-000000000001": {"new": {
            "name": "OVN_Northbound", "model": model, "connected": connected,
            "leader": leader, "index": index}}}})
    }

    #[test]
    fn a_cluster_member_is_refused_when_not_leader_not_connected_or_stale() {
        let w = ServerWatch {
            db: "OVN_Northbound".into(),
            leader_only: true,
            row: Mutex::new(None),
        };
        let seen = AtomicU64::new(0);
        assert_eq!(
            w.update(&seen, &db_row("clustered", true, true, json!(10))),
            Ok(())
        );
        let e = w
            .update(&seen, &db_row("clustered", true, false, json!(11)))
            .unwrap_err();
        assert!(e.contains("not the leader"), "{e}");
        let e = w
            .update(&seen, &db_row("clustered", false, true, json!(11)))
            .unwrap_err();
        assert!(e.contains("not connected"), "{e}");
        let e = w
            .update(&seen, &db_row("clustered", true, true, json!(9)))
            .unwrap_err();
        assert!(e.contains("stale") && e.contains("9 < 10"), "{e}");
        assert_eq!(
            w.update(&seen, &db_row("clustered", true, true, json!(["set", []]))),
            Ok(())
        );
        // A standalone database has no leader to check.
        assert_eq!(
            w.update(
                &seen,
                &db_row("standalone", true, false, json!(["set", []]))
            ),
            Ok(())
        );
        // Without leader_only a connected follower is fine.
        let f = ServerWatch {
            db: "OVN_Northbound".into(),
            leader_only: false,
            row: Mutex::new(None),
        };
        assert_eq!(
            f.update(&seen, &db_row("clustered", true, false, json!(12))),
            Ok(())
        );
        let e = f.update(&seen, &json!({"Database": {}})).err();
        assert_eq!(e, None, "no change keeps the last row");
        let e = w.update(&seen, &json!({"Database": {"6d3c1d5e-0000-0000-0000-000000000001": {"old": {"name": "OVN_Northbound"}}}})).unwrap_err();
        assert!(e.contains("not served"), "{e}");
    }
}
