use super::*;
use crate::value::{Atom, AtomSet};
use serde_json::json;

fn nb() -> Arc<DatabaseSchema> {
    Arc::new(DatabaseSchema::from_file("/usr/share/ovn/ovn-nb.ovsschema").unwrap())
}

fn fixture(name: &str) -> Json {
    let path = format!("{}/testdata/cache/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

fn cache_for(fx: &Json) -> Cache {
    let monitored: BTreeMap<String, Option<Vec<String>>> =
        serde_json::from_value(fx["tables"].clone()).unwrap();
    Cache::new(nb(), monitored).unwrap()
}

/// The snapshot as `{"Table": {"uuid": {col: value}}}` without `_uuid`/`_version`, all values
/// in canonical shape.
fn state_of(s: &Snapshot) -> BTreeMap<String, BTreeMap<Uuid, Row>> {
    s.tables()
        .map(|t| {
            let rows = s
                .rows(t)
                .map(|(u, r)| {
                    let r: Row = r
                        .iter()
                        .filter(|(c, _)| !c.starts_with('_'))
                        .map(|(c, v)| (c.clone(), v.clone()))
                        .collect();
                    (*u, r)
                })
                .collect();
            (t.to_string(), rows)
        })
        .collect()
}

/// A server dump (or fixture state) in the same canonical shape.
fn expected(schema: &DatabaseSchema, j: &Json) -> BTreeMap<String, BTreeMap<Uuid, Row>> {
    let raw: BTreeMap<String, BTreeMap<Uuid, Row>> = serde_json::from_value(j.clone()).unwrap();
    raw.into_iter()
        .map(|(t, rows)| {
            let ts = &schema.tables[&t];
            let rows = rows
                .into_iter()
                .map(|(u, r)| {
                    let r = r
                        .into_iter()
                        .filter(|(c, _)| !c.starts_with('_'))
                        .map(|(c, v)| {
                            let v = ts.column_type(&c).unwrap().normalize(v);
                            (c, v)
                        })
                        .collect();
                    (u, r)
                })
                .collect();
            (t, rows)
        })
        .collect()
}

fn replay(file: &str) {
    let fx = fixture(file);
    let kind = match fx["kind"].as_str().unwrap() {
        "update" => UpdateKind::Update,
        "update2" => UpdateKind::Update2,
        _ => UpdateKind::Update3,
    };
    let cache = cache_for(&fx);
    // The same stream through apply_str must give the same state.
    let by_text = cache_for(&fx);
    let schema = cache.schema().clone();
    let mut events = cache.subscribe();
    match kind {
        UpdateKind::Update3 => {
            let r = fx["initial"].as_array().unwrap();
            cache.apply(kind, &r[2]).unwrap();
            by_text.apply_str(kind, &r[2].to_string()).unwrap();
            cache.set_last_txn_id(r[1].as_str().map(str::to_string));
        }
        _ => {
            cache.apply(kind, &fx["initial"]).unwrap();
            by_text.apply_str(kind, &fx["initial"].to_string()).unwrap();
        }
    }
    assert_eq!(
        state_of(&cache.snapshot()),
        expected(&schema, &fx["initial_state"]),
        "{file}: initial"
    );
    for step in fx["steps"].as_array().unwrap() {
        let what = step["what"].as_str().unwrap();
        let before = cache.snapshot();
        for n in step["notifications"].as_array().unwrap() {
            let p = n.as_array().unwrap();
            match kind {
                UpdateKind::Update3 => {
                    cache.apply(kind, &p[2]).unwrap();
                    by_text.apply_str(kind, &p[2].to_string()).unwrap();
                    cache.set_last_txn_id(p[1].as_str().map(str::to_string));
                }
                _ => {
                    cache.apply(kind, &p[1]).unwrap();
                    by_text.apply_owned(kind, p[1].clone()).unwrap();
                }
            }
        }
        let after = cache.snapshot();
        assert_eq!(
            state_of(&by_text.snapshot()),
            state_of(&after),
            "{file}: apply_str, {what}"
        );
        assert_eq!(
            state_of(&after),
            expected(&schema, &step["state"]),
            "{file}: {what}"
        );
        // Every change is reported, and the events replay the step exactly.
        let mut replayed = state_of(&before);
        while let Ok(c) = events.try_recv() {
            let rows = replayed.get_mut(&c.table).unwrap();
            match (&c.kind, &c.new) {
                (ChangeKind::Delete, None) => {
                    assert_eq!(
                        rows.remove(&c.uuid).as_ref(),
                        c.old.as_deref().map(strip).as_ref()
                    );
                }
                (ChangeKind::Insert | ChangeKind::Modify, Some(n)) => {
                    assert_eq!(c.kind == ChangeKind::Insert, c.old.is_none());
                    rows.insert(c.uuid, strip(n));
                }
                other => panic!("{what}: inconsistent change {other:?}"),
            }
        }
        assert_eq!(replayed, state_of(&after), "{file}: events of {what}");
    }
    if kind == UpdateKind::Update3 {
        assert_eq!(
            cache.last_txn_id().as_deref(),
            Some("00000000-0000-0000-0000-000000000000")
        );
    }
}

fn strip(r: &Row) -> Row {
    r.iter()
        .filter(|(c, _)| !c.starts_with('_'))
        .map(|(c, v)| (c.clone(), v.clone()))
        .collect()
}

#[test]
fn real_update_notifications_replay_to_the_servers_state_after_every_step() {
    replay("nb-update.json");
}

#[test]
fn real_update2_notifications_replay_to_the_servers_state_after_every_step() {
    replay("nb-update2.json");
}

#[test]
fn real_update3_notifications_replay_to_the_servers_state_after_every_step() {
    replay("nb-update3.json");
}

fn atoms(names: &[&str]) -> AtomSet {
    names.iter().map(|n| Atom::from(*n)).collect()
}

#[test]
fn set_diffs_toggle_elements_for_every_pair_of_subsets() {
    let universe = ["a", "b", "c", "d"];
    let subsets: Vec<AtomSet> = (0..16u32)
        .map(|m| {
            universe
                .iter()
                .enumerate()
                .filter(|(i, _)| m & (1 << i) != 0)
                .map(|(_, n)| Atom::from(*n))
                .collect()
        })
        .collect();
    for old in &subsets {
        for new in &subsets {
            let d = diff_of(&Value::Set(old.clone()), &Value::Set(new.clone()));
            assert_eq!(
                d,
                Value::Set(old.symmetric_difference(new).cloned().collect())
            );
            assert_eq!(
                apply_diff(Value::Set(old.clone()), d),
                Value::Set(new.clone()),
                "{old:?} -> {new:?}"
            );
        }
    }
    // The cases spelled out: add, remove, add and remove at once.
    assert_eq!(
        apply_diff(Value::Set(atoms(&["a"])), Value::Set(atoms(&["b"]))),
        Value::Set(atoms(&["a", "b"]))
    );
    assert_eq!(
        apply_diff(Value::Set(atoms(&["a", "b"])), Value::Set(atoms(&["b"]))),
        Value::Set(atoms(&["a"]))
    );
    assert_eq!(
        apply_diff(
            Value::Set(atoms(&["a", "b"])),
            Value::Set(atoms(&["b", "c"]))
        ),
        Value::Set(atoms(&["a", "c"]))
    );
}

#[test]
fn map_diffs_insert_delete_and_replace_for_every_pair_of_maps() {
    // Every map over keys k1,k2 with values v1,v2 (or the key absent): 9 maps, 81 pairs.
    let choices = [None, Some("v1"), Some("v2")];
    let mut maps = Vec::new();
    for a in choices {
        for b in choices {
            let mut m = AtomMap::new();
            if let Some(v) = a {
                m.insert(Atom::from("k1"), Atom::from(v));
            }
            if let Some(v) = b {
                m.insert(Atom::from("k2"), Atom::from(v));
            }
            maps.push(m);
        }
    }
    for old in &maps {
        for new in &maps {
            let d = diff_of(&Value::Map(old.clone()), &Value::Map(new.clone()));
            assert_eq!(
                apply_diff(Value::Map(old.clone()), d),
                Value::Map(new.clone()),
                "{old:?} -> {new:?}"
            );
        }
    }
    let m = |p: &[(&str, &str)]| Value::map(p.iter().map(|(k, v)| (*k, *v)));
    // insert a key
    assert_eq!(
        apply_diff(m(&[("a", "1")]), m(&[("b", "2")])),
        m(&[("a", "1"), ("b", "2")])
    );
    // delete a key: the diff carries the old pair
    assert_eq!(
        apply_diff(m(&[("a", "1"), ("b", "2")]), m(&[("b", "2")])),
        m(&[("a", "1")])
    );
    // replace a value: the diff carries the new pair
    assert_eq!(
        apply_diff(m(&[("a", "1")]), m(&[("a", "9")])),
        m(&[("a", "9")])
    );
    // an empty diff (written as an empty set) changes nothing
    assert_eq!(
        apply_diff(m(&[("a", "1")]), Value::empty_set()),
        m(&[("a", "1")])
    );
}

fn ls_cache() -> Cache {
    Cache::new(
        nb(),
        BTreeMap::from([
            ("Logical_Switch".to_string(), None),
            (
                "Logical_Switch_Port".to_string(),
                Some(vec![
                    "name".to_string(),
                    "external_ids".to_string(),
                    "tag_request".to_string(),
                ]),
            ),
        ]),
    )
    .unwrap()
}

const A: &str = "00000000-0000-0000-0000-00000000000a";
const B: &str = "00000000-0000-0000-0000-00000000000b";

fn ua() -> Uuid {
    Uuid::parse_str(A).unwrap()
}

#[test]
fn inserts_fill_the_defaults_update2_leaves_out_and_carry_their_uuid() {
    let c = ls_cache();
    c.apply(
        UpdateKind::Update2,
        &json!({"Logical_Switch_Port": {A: {"insert": {"name": "p"}}}}),
    )
    .unwrap();
    let s = c.snapshot();
    let r = s.get("Logical_Switch_Port", &ua()).unwrap();
    assert_eq!(r["name"], Value::from("p"));
    assert_eq!(r["external_ids"], Value::empty_map());
    assert_eq!(r["tag_request"], Value::empty_set());
    assert_eq!(r["_uuid"], Value::uuid(ua()));
    assert!(
        !r.contains_key("type"),
        "unmonitored columns are not invented"
    );
}

#[test]
fn a_snapshot_never_sees_later_changes() {
    let c = ls_cache();
    c.apply(UpdateKind::Update2, &json!({"Logical_Switch_Port": {A: {"insert": {"name": "p", "external_ids": ["map", [["k", "1"]]]}}}})).unwrap();
    let before = c.snapshot();
    c.apply(UpdateKind::Update2, &json!({"Logical_Switch_Port": {A: {"modify": {"name": "q", "external_ids": ["map", [["k", "2"]]]}}}})).unwrap();
    c.apply(
        UpdateKind::Update2,
        &json!({"Logical_Switch_Port": {B: {"insert": {"name": "r"}}}}),
    )
    .unwrap();
    let after = c.snapshot();
    let old = before.get("Logical_Switch_Port", &ua()).unwrap();
    assert_eq!(old["name"], Value::from("p"));
    assert_eq!(old["external_ids"], Value::map([("k", "1")]));
    assert_eq!(before.len("Logical_Switch_Port"), 1);
    assert_eq!(
        after.get("Logical_Switch_Port", &ua()).unwrap()["name"],
        Value::from("q")
    );
    assert_eq!(after.len("Logical_Switch_Port"), 2);
    // Indexes in the old snapshot are as old as its rows.
    assert!(
        before
            .find_unique("Logical_Switch_Port", &[("name", "p".into())])
            .is_some()
    );
    assert!(
        after
            .find_unique("Logical_Switch_Port", &[("name", "p".into())])
            .is_none()
    );
    c.clear();
    assert_eq!(after.len("Logical_Switch_Port"), 2);
    assert!(c.snapshot().is_empty());
}

#[test]
fn unique_and_external_id_indexes_follow_inserts_renames_and_deletes() {
    let c = ls_cache();
    // Registered before any row, and (below) one registered after rows exist.
    c.add_index("Logical_Switch_Port", ClientIndex::external_id("owner"))
        .unwrap();
    c.apply(UpdateKind::Update2, &json!({"Logical_Switch_Port": {
        A: {"insert": {"name": "pa", "external_ids": ["map", [["owner", "x"]]]}},
        B: {"insert": {"name": "pb", "external_ids": ["map", [["owner", "x"], ["zone", "z1"]]]}},
    }})).unwrap();
    c.add_index("Logical_Switch_Port", ClientIndex::external_id("zone"))
        .unwrap();
    c.add_index(
        "Logical_Switch_Port",
        ClientIndex::Column("tag_request".into()),
    )
    .unwrap();
    let s = c.snapshot();
    assert_eq!(
        s.find_unique("Logical_Switch_Port", &[("name", "pa".into())])
            .unwrap()["_uuid"],
        Value::uuid(ua())
    );
    assert_eq!(
        s.find_by_external_id("Logical_Switch_Port", "owner", "x")
            .len(),
        2
    );
    assert_eq!(
        s.find_by_external_id("Logical_Switch_Port", "zone", "z1")
            .len(),
        1
    );
    assert_eq!(
        s.find(
            "Logical_Switch_Port",
            &ClientIndex::Column("tag_request".into()),
            &Value::empty_set()
        )
        .len(),
        2
    );

    c.apply(UpdateKind::Update2, &json!({"Logical_Switch_Port": {
        A: {"modify": {"name": "pa2", "external_ids": ["map", [["owner", "y"]]], "tag_request": 5}},
        B: {"delete": null},
    }})).unwrap();
    let s = c.snapshot();
    assert!(
        s.find_unique("Logical_Switch_Port", &[("name", "pa".into())])
            .is_none()
    );
    assert!(
        s.find_unique("Logical_Switch_Port", &[("name", "pa2".into())])
            .is_some()
    );
    assert!(
        s.find_unique("Logical_Switch_Port", &[("name", "pb".into())])
            .is_none()
    );
    assert!(
        s.find_by_external_id("Logical_Switch_Port", "owner", "x")
            .is_empty()
    );
    assert_eq!(
        s.find_by_external_id("Logical_Switch_Port", "owner", "y")
            .len(),
        1
    );
    assert!(
        s.find_by_external_id("Logical_Switch_Port", "zone", "z1")
            .is_empty()
    );
    // A bare atom finds an optional column's one-element set.
    assert_eq!(
        s.find(
            "Logical_Switch_Port",
            &ClientIndex::Column("tag_request".into()),
            &Value::from(5i64)
        )
        .len(),
        1
    );
    // Logical_Switch has no schema index on name: no unique lookup.
    assert!(
        s.find_unique("Logical_Switch", &[("name", "x".into())])
            .is_none()
    );
    assert!(
        c.add_index("Logical_Switch_Port", ClientIndex::Column("type".into()))
            .is_err(),
        "type is not monitored"
    );
}

#[tokio::test]
async fn subscribers_get_insert_modify_and_delete_with_old_and_new_rows() {
    let c = ls_cache();
    let mut rx = c.subscribe();
    let dropped = c.subscribe();
    drop(dropped);
    c.apply(
        UpdateKind::Update2,
        &json!({"Logical_Switch_Port": {A: {"insert": {"name": "p"}}}}),
    )
    .unwrap();
    c.apply(
        UpdateKind::Update2,
        &json!({"Logical_Switch_Port": {A: {"modify": {"name": "q"}}}}),
    )
    .unwrap();
    c.apply(
        UpdateKind::Update2,
        &json!({"Logical_Switch_Port": {A: {"delete": null}}}),
    )
    .unwrap();
    let e1 = rx.recv().await.unwrap();
    assert_eq!(
        (
            e1.kind,
            e1.old.is_none(),
            e1.new.as_ref().unwrap()["name"].clone()
        ),
        (ChangeKind::Insert, true, Value::from("p"))
    );
    let e2 = rx.recv().await.unwrap();
    assert_eq!(e2.kind, ChangeKind::Modify);
    assert_eq!(e2.old.as_ref().unwrap()["name"], Value::from("p"));
    assert_eq!(e2.new.as_ref().unwrap()["name"], Value::from("q"));
    let e3 = rx.recv().await.unwrap();
    assert_eq!(
        (e3.kind, e3.table.as_str(), e3.uuid),
        (ChangeKind::Delete, "Logical_Switch_Port", ua())
    );
    assert!(e3.new.is_none());
    assert!(rx.try_recv().is_err());
}

#[test]
fn a_bad_update_is_an_error_and_leaves_the_cache_unchanged() {
    let c = ls_cache();
    c.apply(
        UpdateKind::Update2,
        &json!({"Logical_Switch_Port": {A: {"insert": {"name": "p"}}}}),
    )
    .unwrap();
    let cases = [
        (
            UpdateKind::Update2,
            json!({"Logical_Switch_Port": {B: {"insert": {"name": "b"}}, A: {"insert": {"name": "again"}}}}),
            format!("table Logical_Switch_Port: insert of row {A}, which the cache already has"),
        ),
        (
            UpdateKind::Update2,
            json!({"Logical_Switch_Port": {B: {"modify": {"name": "b"}}}}),
            format!("table Logical_Switch_Port: modify of row {B}, which the cache does not have"),
        ),
        (
            UpdateKind::Update3,
            json!({"Logical_Switch_Port": {B: {"delete": null}}}),
            format!("table Logical_Switch_Port: delete of row {B}, which the cache does not have"),
        ),
        (
            UpdateKind::Update2,
            json!({"ACL": {B: {"insert": {}}}}),
            "table ACL is not monitored by this cache".to_string(),
        ),
        (
            UpdateKind::Update2,
            json!({"Logical_Switch_Port": {B: {"insert": {"colour": "red"}}}}),
            "table Logical_Switch_Port: unknown column \"colour\"".to_string(),
        ),
        (
            UpdateKind::Update2,
            json!({"Logical_Switch_Port": {A: {"modify": {"external_ids": "x"}}}}),
            format!(
                "table Logical_Switch_Port, row {A}, column external_ids: diff \"x\" is not a map diff for a map column"
            ),
        ),
        (
            UpdateKind::Update2,
            json!({"Logical_Switch_Port": {A: {"bogus": {}}}}),
            "cannot parse Update2 table-updates".to_string(),
        ),
        (
            UpdateKind::Update,
            json!({"Logical_Switch_Port": {B: {}}}),
            format!("table Logical_Switch_Port, row {B}: an update with neither old nor new"),
        ),
    ];
    let before = state_of(&c.snapshot());
    let mut rx = c.subscribe();
    for (kind, j, want) in cases {
        let err = c.apply(kind, &j).unwrap_err();
        assert_eq!(err.to_string(), want);
        assert_eq!(state_of(&c.snapshot()), before, "{want}");
        let err = c.apply_str(kind, &j.to_string()).unwrap_err();
        assert_eq!(err.to_string(), want, "apply_str");
        let err = c.apply_owned(kind, j.clone()).unwrap_err();
        assert_eq!(err.to_string(), want, "apply_owned");
        assert_eq!(state_of(&c.snapshot()), before, "{want}");
    }
    // Text after the table-updates object is an error too, and changes nothing.
    let text = format!(
        "{} x",
        json!({"Logical_Switch_Port": {B: {"insert": {"name": "b"}}}})
    );
    assert!(matches!(
        c.apply_str(UpdateKind::Update2, &text),
        Err(CacheError::Parse { .. })
    ));
    assert_eq!(state_of(&c.snapshot()), before);
    assert!(rx.try_recv().is_err(), "a failed update sends no events");
}

#[test]
fn clear_reports_a_delete_for_every_row_and_forgets_the_transaction_id() {
    let c = ls_cache();
    c.set_last_txn_id(Some("t1".into()));
    c.apply(UpdateKind::Update2, &json!({"Logical_Switch_Port": {A: {"insert": {"name": "p"}}, B: {"insert": {"name": "q"}}}})).unwrap();
    let mut rx = c.subscribe();
    c.clear();
    assert_eq!(c.last_txn_id(), None);
    let mut deleted = vec![rx.try_recv().unwrap().uuid, rx.try_recv().unwrap().uuid];
    deleted.sort();
    assert_eq!(deleted, vec![ua(), Uuid::parse_str(B).unwrap()]);
    assert!(
        c.snapshot()
            .find_unique("Logical_Switch_Port", &[("name", "p".into())])
            .is_none()
    );
    // The same rows can come back in a reload.
    c.apply(
        UpdateKind::Update2,
        &json!({"Logical_Switch_Port": {A: {"initial": {"name": "p"}}}}),
    )
    .unwrap();
    assert!(
        c.snapshot()
            .find_unique("Logical_Switch_Port", &[("name", "p".into())])
            .is_some()
    );
}

#[test]
fn a_cache_cannot_be_built_for_tables_or_columns_the_schema_lacks() {
    let e = Cache::new(nb(), BTreeMap::from([("Nope".to_string(), None)])).unwrap_err();
    assert_eq!(e.to_string(), "unknown table \"Nope\"");
    let e = Cache::new(
        nb(),
        BTreeMap::from([("ACL".to_string(), Some(vec!["nope".to_string()]))]),
    )
    .unwrap_err();
    assert_eq!(e.to_string(), "table ACL: unknown column \"nope\"");
}

// ---- against a real ovsdb-server: a monitor_cond_since stream feeds the cache ----

mod live {
    use super::*;
    use crate::ops::{self, Operation, TransactResult};
    use std::io::Write;
    use std::os::unix::net::UnixStream;
    use ycloud_testsupport::ovsdb_server::{OvsdbServer, SchemaFile};

    /// A bare JSON-RPC monitor connection (the real client is tested elsewhere; this keeps
    /// the cache test independent of it).
    struct Monitor {
        tx: UnixStream,
        rx: serde_json::StreamDeserializer<'static, serde_json::de::IoRead<UnixStream>, Json>,
        next_id: u64,
    }

    impl Monitor {
        fn connect(srv: &OvsdbServer) -> Monitor {
            let path = srv.unix_remote().strip_prefix("unix:").unwrap().to_string();
            let s = UnixStream::connect(path).unwrap();
            s.set_read_timeout(Some(std::time::Duration::from_secs(20)))
                .unwrap();
            let rx = serde_json::Deserializer::from_reader(s.try_clone().unwrap()).into_iter();
            Monitor {
                tx: s,
                rx,
                next_id: 1,
            }
        }

        /// Sends a request and returns its result, applying every update3 on the way.
        fn call(&mut self, cache: &Cache, method: &str, params: Json) -> Json {
            let id = self.next_id;
            self.next_id += 1;
            let msg = json!({"method": method, "params": params, "id": id});
            self.tx.write_all(msg.to_string().as_bytes()).unwrap();
            loop {
                let m = self.rx.next().unwrap().unwrap();
                match m.get("method").and_then(Json::as_str) {
                    Some("update3") => {
                        let p = m["params"].as_array().unwrap();
                        cache.apply(UpdateKind::Update3, &p[2]).unwrap();
                        cache.set_last_txn_id(p[1].as_str().map(str::to_string));
                    }
                    Some("echo") => {
                        let r = json!({"result": m["params"], "error": null, "id": m["id"]});
                        self.tx.write_all(r.to_string().as_bytes()).unwrap();
                    }
                    Some(other) => panic!("unexpected {other}"),
                    None if m["id"] == json!(id) => {
                        assert!(m["error"].is_null(), "{m}");
                        return m["result"].clone();
                    }
                    None => panic!("reply to an unknown id: {m}"),
                }
            }
        }
    }

    struct Rng(u64);
    impl Rng {
        fn next(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % n
        }
    }

    fn row(pairs: Vec<(&str, Value)>) -> Row {
        pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
    }

    /// One random transaction over what the cache currently holds.
    fn random_ops(rng: &mut Rng, s: &Snapshot, i: u64) -> Vec<Operation> {
        let switches: Vec<(Uuid, Arc<Row>)> = s
            .rows("Logical_Switch")
            .map(|(u, r)| (*u, r.clone()))
            .collect();
        let pick = |rng: &mut Rng| switches[rng.next(switches.len() as u64) as usize].clone();
        match (rng.next(8), switches.is_empty()) {
            (0 | 1, _) | (_, true) => vec![ops::insert(
                "Logical_Switch",
                row(vec![
                    ("name", format!("ls{i}").into()),
                    (
                        "external_ids",
                        Value::map([("owner", format!("o{}", rng.next(3)))]),
                    ),
                ]),
                "ls",
            )],
            (2, false) => {
                let (u, _) = pick(rng);
                vec![
                    ops::insert(
                        "Logical_Switch_Port",
                        row(vec![
                            ("name", format!("p{i}").into()),
                            ("tag_request", (rng.next(4000) as i64).into()),
                        ]),
                        "p",
                    ),
                    ops::set_insert("Logical_Switch", u, "ports", [Atom::NamedUuid("p".into())]),
                ]
            }
            (3, false) => {
                let (u, r) = pick(rng);
                match r["ports"].atoms().unwrap().first() {
                    Some(p) => vec![ops::set_delete(
                        "Logical_Switch",
                        u,
                        "ports",
                        [(*p).clone()],
                    )],
                    None => vec![ops::update(
                        "Logical_Switch",
                        u,
                        row(vec![("name", format!("renamed{i}").into())]),
                    )],
                }
            }
            (4 | 5, false) => {
                let (u, r) = pick(rng);
                let old = r["external_ids"].as_map().unwrap().clone();
                let mut new = old.clone();
                let k = Atom::from(format!("k{}", rng.next(3)));
                if new.remove(&k).is_none() || rng.next(2) == 0 {
                    new.insert(k, Atom::from(format!("v{i}")));
                }
                ops::map_update("Logical_Switch", u, "external_ids", &old, &new)
                    .into_iter()
                    .collect()
            }
            (6, false) => {
                // Replace the whole other_config map and toggle a port tag (optional column).
                let (u, r) = pick(rng);
                let mut v = vec![ops::update(
                    "Logical_Switch",
                    u,
                    row(vec![("other_config", Value::map([("x", format!("{i}"))]))]),
                )];
                if let Some(p) = r["ports"]
                    .atoms()
                    .unwrap()
                    .first()
                    .and_then(|a| a.as_uuid())
                {
                    let tag = if rng.next(2) == 0 {
                        Value::empty_set()
                    } else {
                        Value::from(i as i64)
                    };
                    v.push(ops::update(
                        "Logical_Switch_Port",
                        p,
                        row(vec![("tag_request", tag)]),
                    ));
                }
                v
            }
            _ => {
                let (u, _) = pick(rng);
                vec![ops::delete("Logical_Switch", u)]
            }
        }
    }

    #[test]
    fn a_cache_fed_by_a_real_monitor_equals_the_servers_dump_after_random_transactions() {
        let srv = OvsdbServer::start(SchemaFile::Nb).unwrap();
        let schema = nb();
        let tables = ["Logical_Switch", "Logical_Switch_Port"];
        let cache = Cache::new(
            schema.clone(),
            tables.iter().map(|t| (t.to_string(), None)).collect(),
        )
        .unwrap();
        cache
            .add_index("Logical_Switch", ClientIndex::external_id("owner"))
            .unwrap();
        let mut mon = Monitor::connect(&srv);
        let reqs: serde_json::Map<String, Json> = tables
            .iter()
            .map(|t| (t.to_string(), json!([{}])))
            .collect();
        let reply = mon.call(
            &cache,
            "monitor_cond_since",
            json!([
                srv.db_name(),
                "m",
                reqs,
                "00000000-0000-0000-0000-000000000000"
            ]),
        );
        cache.apply(UpdateKind::Update3, &reply[2]).unwrap();

        let mut rng = Rng(0x9e3779b97f4a7c15);
        let mut committed = 0;
        for i in 0..60 {
            let txn = random_ops(&mut rng, &cache.snapshot(), i);
            ops::validate(&txn, &schema).unwrap();
            let out = srv
                .ovsdb_client(&[
                    "transact",
                    &ops::transact_params(srv.db_name(), &txn).to_string(),
                ])
                .unwrap();
            let res = TransactResult::from_json(&serde_json::from_str(&out).unwrap()).unwrap();
            assert_eq!(res.first_error(&txn), None, "txn {i}: {txn:?}");
            committed += 1;
            // Round-trip an echo so every update caused by the transaction has arrived.
            mon.call(&cache, "echo", json!([]));
            let dump = srv.dump_json();
            let want: BTreeMap<_, _> = expected(&schema, &dump)
                .into_iter()
                .filter(|(t, _)| tables.contains(&t.as_str()))
                .collect();
            let s = cache.snapshot();
            assert_eq!(state_of(&s), want, "after transaction {i}: {txn:?}");
            // The external_ids index agrees with a scan.
            for o in ["o0", "o1", "o2"] {
                let scan = s
                    .rows("Logical_Switch")
                    .filter(|(_, r)| r["external_ids"].map_get("owner") == Some(&Atom::from(o)))
                    .count();
                assert_eq!(
                    s.find_by_external_id("Logical_Switch", "owner", o).len(),
                    scan
                );
            }
        }
        assert_eq!(committed, 60);
        assert!(cache.snapshot().len("Logical_Switch") > 0);
    }
}

// ---- random histories: v1 and v2 notifications agree with a plain model of the table ----

mod random {
    use super::*;
    use proptest::prelude::*;

    const COLS: [&str; 4] = ["addresses", "external_ids", "name", "tag_request"];

    fn cache() -> Cache {
        let c = Cache::new(
            nb(),
            BTreeMap::from([(
                "Logical_Switch_Port".to_string(),
                Some(COLS.iter().map(|c| c.to_string()).collect()),
            )]),
        )
        .unwrap();
        c.add_index("Logical_Switch_Port", ClientIndex::external_id("k0"))
            .unwrap();
        c
    }

    /// A row of slot `slot`: names stay unique per slot, as the server's index demands.
    fn row_strategy(slot: u8) -> impl Strategy<Value = Row> {
        (
            any::<bool>(),
            proptest::collection::btree_set("a[0-3]", 0..4),
            proptest::collection::btree_map("k[0-2]", "v[0-2]", 0..3),
            proptest::option::of(0i64..3),
        )
            .prop_map(move |(alt, addrs, ids, tag)| {
                Row::from([
                    (
                        "name".to_string(),
                        Value::from(format!("{}{slot}", if alt { "m" } else { "n" })),
                    ),
                    ("addresses".to_string(), Value::set(addrs)),
                    ("external_ids".to_string(), Value::map(ids)),
                    (
                        "tag_request".to_string(),
                        Value::Set(tag.into_iter().map(Atom::Integer).collect()),
                    ),
                ])
            })
    }

    fn step_strategy() -> impl Strategy<Value = (u8, Option<Row>)> {
        (0u8..4).prop_flat_map(|slot| {
            (
                Just(slot),
                proptest::option::weighted(0.8, row_strategy(slot)),
            )
        })
    }

    fn with_uuid(u: Uuid, r: &Row) -> Row {
        let mut r = r.clone();
        r.insert("_uuid".into(), Value::uuid(u));
        r
    }

    fn state(c: &Cache) -> BTreeMap<Uuid, Row> {
        c.snapshot()
            .rows("Logical_Switch_Port")
            .map(|(u, r)| (*u, (**r).clone()))
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]
        #[test]
        fn random_histories_through_update_and_update2_match_the_model(
            steps in proptest::collection::vec(step_strategy(), 1..25)
        ) {
            let (v1, v2) = (cache(), cache());
            let mut model: BTreeMap<Uuid, Row> = BTreeMap::new();
            let mut snapshots = Vec::new();
            for (slot, new) in steps {
                let u = Uuid::from_u128(slot as u128 + 1);
                let old = model.get(&u).cloned();
                let (n1, n2) = match (&old, &new) {
                    (None, None) => continue,
                    (None, Some(n)) => {
                        // update2 leaves out columns at their default (empty) value.
                        let sparse: Row = n.iter().filter(|(_, v)| !v.is_empty()).map(|(c, v)| (c.clone(), v.clone())).collect();
                        (json!({"new": n}), json!({"insert": sparse}))
                    }
                    (Some(o), Some(n)) => {
                        let changed: Vec<&String> = n.keys().filter(|c| o[*c] != n[*c]).collect();
                        if changed.is_empty() {
                            continue; // the server sends nothing for a no-op
                        }
                        let old_cols: Row = changed.iter().map(|c| ((*c).clone(), o[*c].clone())).collect();
                        let diff: Row = changed.iter().map(|c| {
                            let composite = matches!(c.as_str(), "addresses" | "external_ids");
                            let v = if composite { diff_of(&o[*c], &n[*c]) } else { n[*c].clone() };
                            ((*c).clone(), v)
                        }).collect();
                        (json!({"old": old_cols, "new": n}), json!({"modify": diff}))
                    }
                    (Some(o), None) => (json!({"old": o}), json!({"delete": null})),
                };
                let key = u.to_string();
                v1.apply(UpdateKind::Update, &json!({"Logical_Switch_Port": {key.clone(): n1}})).unwrap();
                v2.apply(UpdateKind::Update2, &json!({"Logical_Switch_Port": {key: n2}})).unwrap();
                match new {
                    Some(n) => { model.insert(u, with_uuid(u, &n)); }
                    None => { model.remove(&u); }
                }
                prop_assert_eq!(&state(&v1), &model);
                prop_assert_eq!(&state(&v2), &model);
                let s = v2.snapshot();
                for (u, r) in &model {
                    let by_name = s.find_unique("Logical_Switch_Port", &[("name", r["name"].clone())]);
                    prop_assert_eq!(by_name.map(|r| r["_uuid"].clone()), Some(Value::uuid(*u)));
                }
                for v in ["v0", "v1", "v2"] {
                    let want = model.values().filter(|r| r["external_ids"].map_get("k0") == Some(&Atom::from(v))).count();
                    prop_assert_eq!(s.find_by_external_id("Logical_Switch_Port", "k0", v).len(), want);
                }
                snapshots.push((s, model.clone()));
            }
            // No snapshot saw anything that happened after it was taken.
            for (s, m) in snapshots {
                let got: BTreeMap<Uuid, Row> = s.rows("Logical_Switch_Port").map(|(u, r)| (*u, (**r).clone())).collect();
                prop_assert_eq!(got, m);
            }
        }
    }
}
