use super::*;
use serde_json::json;
use ycloud_testsupport::ovsdb_server::{OvsdbServer, SchemaFile};

fn nb() -> DatabaseSchema {
    DatabaseSchema::from_file("/usr/share/ovn/ovn-nb.ovsschema").unwrap()
}

fn row(pairs: &[(&str, Value)]) -> Row {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

const U: &str = "36bb5fb4-4bd5-4b1e-9a04-7b1c0f6a5e1d";

fn u() -> Uuid {
    Uuid::parse_str(U).unwrap()
}

#[test]
fn every_operation_serializes_to_the_rfc_7047_json_form() {
    let cases = vec![
        (
            insert("Logical_Switch", row(&[("name", "a".into())]), "ls"),
            json!({"op": "insert", "table": "Logical_Switch", "row": {"name": "a"}, "uuid-name": "ls"}),
        ),
        (
            Operation::Insert {
                table: "T".into(),
                row: Row::new(),
                uuid_name: None,
            },
            json!({"op": "insert", "table": "T", "row": {}}),
        ),
        (
            select("T", vec![Condition::eq("name", "a")]),
            json!({"op": "select", "table": "T", "where": [["name", "==", "a"]]}),
        ),
        (
            Operation::Select {
                table: "T".into(),
                where_: vec![],
                columns: Some(vec!["name".into()]),
            },
            json!({"op": "select", "table": "T", "where": [], "columns": ["name"]}),
        ),
        (
            update("T", u(), row(&[("x", 1i64.into())])),
            json!({"op": "update", "table": "T", "where": [["_uuid", "==", ["uuid", U]]], "row": {"x": 1}}),
        ),
        (
            set_insert("T", u(), "s", [1i64, 2]),
            json!({"op": "mutate", "table": "T", "where": [["_uuid", "==", ["uuid", U]]],
                   "mutations": [["s", "insert", ["set", [1, 2]]]]}),
        ),
        (
            delete("T", u()),
            json!({"op": "delete", "table": "T", "where": [["_uuid", "==", ["uuid", U]]]}),
        ),
        (
            wait_absent("T", "name", "a"),
            json!({"op": "wait", "table": "T", "where": [["name", "==", "a"]], "columns": ["name"],
                   "until": "!=", "rows": [{"name": "a"}], "timeout": 0}),
        ),
        (
            Operation::Commit { durable: true },
            json!({"op": "commit", "durable": true}),
        ),
        (Operation::Abort, json!({"op": "abort"})),
        (
            Operation::Comment("hi".into()),
            json!({"op": "comment", "comment": "hi"}),
        ),
        (
            Operation::Assert { lock: "l".into() },
            json!({"op": "assert", "lock": "l"}),
        ),
    ];
    for (op, want) in cases {
        assert_eq!(op.to_json(), want, "{}", op.op_name());
        // The streaming serializer and to_json agree.
        assert_eq!(
            serde_json::from_str::<Json>(&serde_json::to_string(&op).unwrap()).unwrap(),
            want
        );
    }
    assert_eq!(
        transact_params("DB", &[Operation::Abort]),
        json!(["DB", {"op": "abort"}])
    );
}

#[test]
fn transact_params_encoded_straight_to_bytes_are_the_json_tree_s_params() {
    let ops = vec![
        insert("Logical_Switch", row(&[("name", "a".into())]), "ls"),
        set_insert("T", u(), "s", [1i64, 2]),
        delete("T", u()),
        Operation::Commit { durable: false },
    ];
    let bytes = serde_json::to_vec(&TransactParams {
        db: "DB",
        ops: &ops,
    })
    .unwrap();
    assert_eq!(
        serde_json::from_slice::<Json>(&bytes).unwrap(),
        transact_params("DB", &ops)
    );
    let bad = vec![insert(
        "T",
        row(&[("r", Value::Atom(Atom::Real(f64::NAN)))]),
        "x",
    )];
    assert!(
        serde_json::to_vec(&TransactParams {
            db: "DB",
            ops: &bad
        })
        .is_err(),
        "a real that is not finite is refused, not sent"
    );
}

#[test]
fn condition_functions_and_mutators_use_their_wire_names() {
    let f = [
        (Function::Lt, "<"),
        (Function::Le, "<="),
        (Function::Eq, "=="),
        (Function::Ne, "!="),
        (Function::Ge, ">="),
        (Function::Gt, ">"),
        (Function::Includes, "includes"),
        (Function::Excludes, "excludes"),
    ];
    for (func, s) in f {
        assert_eq!(
            serde_json::to_value(Condition::new("c", func, 1i64)).unwrap(),
            json!(["c", s, 1])
        );
    }
    let m = [
        (Mutator::Add, "+="),
        (Mutator::Sub, "-="),
        (Mutator::Mul, "*="),
        (Mutator::Div, "/="),
        (Mutator::Mod, "%="),
        (Mutator::Insert, "insert"),
        (Mutator::Delete, "delete"),
    ];
    for (mu, s) in m {
        assert_eq!(
            serde_json::to_value(Mutation::new("c", mu, 1i64)).unwrap(),
            json!(["c", s, 1])
        );
    }
}

#[test]
fn update_changed_writes_only_changed_columns_and_nothing_when_equal() {
    let old = row(&[
        ("_uuid", Value::uuid(u())),
        ("name", "a".into()),
        ("x", 1i64.into()),
    ]);
    let new = row(&[
        ("_uuid", Value::uuid(Uuid::nil())),
        ("name", "a".into()),
        ("x", 2i64.into()),
    ]);
    let op = update_changed("T", u(), &old, &new).unwrap();
    assert_eq!(op, update("T", u(), row(&[("x", 2i64.into())])));
    assert_eq!(update_changed("T", u(), &old, &old), None);
}

#[test]
fn map_update_deletes_stale_keys_and_inserts_changed_ones_in_one_mutate() {
    let m = |p: &[(&str, &str)]| {
        p.iter()
            .map(|(k, v)| (Atom::from(*k), Atom::from(*v)))
            .collect::<crate::value::AtomMap>()
    };
    let old = m(&[("keep", "1"), ("gone", "2"), ("chg", "3")]);
    let new = m(&[("keep", "1"), ("chg", "4"), ("new", "5")]);
    let op = map_update("T", u(), "external_ids", &old, &new).unwrap();
    assert_eq!(
        op.to_json()["mutations"],
        json!([
            ["external_ids", "delete", ["set", ["chg", "gone"]]],
            [
                "external_ids",
                "insert",
                ["map", [["chg", "4"], ["new", "5"]]]
            ]
        ])
    );
    assert_eq!(map_update("T", u(), "external_ids", &old, &old), None);
}

#[test]
fn validation_rejects_bad_operations_naming_what_is_wrong() {
    let s = nb();
    let cases: Vec<(Vec<Operation>, &str)> = vec![
        (
            vec![insert(
                "Load_Balancer",
                row(&[("protocol", "http".into())]),
                "lb",
            )],
            "table Load_Balancer, column protocol: value \"http\" is not one of \"sctp\", \"tcp\", \"udp\"",
        ),
        (vec![delete("Nope", u())], "unknown table \"Nope\""),
        (
            vec![select("Logical_Switch", vec![Condition::eq("nme", "a")])],
            "table Logical_Switch: unknown column \"nme\"",
        ),
        (
            vec![select(
                "Logical_Switch",
                vec![Condition::new("name", Function::Lt, "a")],
            )],
            "table Logical_Switch: condition on name with <: ordering functions apply only to integer and real columns of at most one element",
        ),
        (
            vec![Operation::Mutate {
                table: "Logical_Switch".into(),
                where_: vec![],
                mutations: vec![Mutation::new("name", Mutator::Insert, "x")],
            }],
            "table Logical_Switch: mutation of name with insert: insert applies only to set and map columns",
        ),
        (
            vec![Operation::Mutate {
                table: "ACL".into(),
                where_: vec![],
                mutations: vec![Mutation::new("priority", Mutator::Div, 0i64)],
            }],
            "table ACL: mutation of priority with /=: division by zero",
        ),
        (
            vec![insert(
                "Logical_Switch",
                row(&[("ports", Value::named_uuid("p"))]),
                "ls",
            )],
            "named-uuid \"p\" is used but no insert in this transaction defines it",
        ),
        (
            vec![
                insert("Logical_Switch", Row::new(), "x"),
                insert("Logical_Switch", Row::new(), "x"),
            ],
            "uuid-name \"x\" is defined by more than one insert",
        ),
        (
            vec![insert("Logical_Switch", Row::new(), "1bad")],
            "invalid uuid-name \"1bad\" (must match [a-zA-Z_][a-zA-Z0-9_]*)",
        ),
        (
            vec![update(
                "Logical_Switch",
                u(),
                row(&[("_uuid", Value::uuid(u()))]),
            )],
            "table Logical_Switch: column _uuid is set by the server and cannot be written",
        ),
    ];
    for (ops, want) in cases {
        assert_eq!(validate(&ops, &s).unwrap_err().to_string(), want);
    }
    // A required enum column left out would be written as its default "", which is not
    // one of the values (the server rejects it the same way).
    let err = insert("ACL", row(&[("priority", 1i64.into())]), "acl")
        .validate(&s)
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "table ACL, column action: value \"\" is not one of \"allow\", \"allow-related\", \"allow-stateless\", \"drop\", \"reject\""
    );
    let vs = DatabaseSchema::from_file("/usr/share/openvswitch/vswitch.ovsschema").unwrap();
    let err = update("Bridge", u(), row(&[("name", "br0".into())]))
        .validate(&vs)
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "table Bridge, column name: value \"br0\" cannot be changed: the column is not mutable"
    );
}

#[test]
fn valid_transactions_pass_validation() {
    let s = nb();
    let ops = vec![
        wait_absent("Logical_Switch_Port", "name", "p1"),
        insert("Logical_Switch_Port", row(&[("name", "p1".into())]), "p1"),
        set_insert(
            "Logical_Switch",
            u(),
            "ports",
            [Atom::NamedUuid("p1".into())],
        ),
        map_set_keys("Logical_Switch", u(), "external_ids", [("k", "v")]),
        map_delete_keys("Logical_Switch", u(), "external_ids", ["k"]),
        select(
            "Logical_Switch",
            vec![Condition::new(
                "ports",
                Function::Includes,
                Value::named_uuid("p1"),
            )],
        ),
        Operation::Mutate {
            table: "ACL".into(),
            where_: vec![Condition::new("priority", Function::Ge, 10i64)],
            mutations: vec![Mutation::new("priority", Mutator::Add, 1i64)],
        },
        Operation::Commit { durable: false },
    ];
    validate(&ops, &s).unwrap();
}

#[test]
fn transact_results_parse_every_result_shape() {
    let j = json!([{}, {"uuid": ["uuid", U]}, {"count": 2}, {"rows": [{"name": "a"}]},
                   {"error": "timed out", "details": "\"where\" clause test failed"}, null]);
    let r = TransactResult::from_json(&j).unwrap();
    assert_eq!(
        r.results,
        vec![
            OperationResult::Empty,
            OperationResult::Uuid(u()),
            OperationResult::Count(2),
            OperationResult::Rows(vec![row(&[("name", "a".into())])]),
            OperationResult::Error {
                error: "timed out".into(),
                details: Some("\"where\" clause test failed".into())
            },
            OperationResult::NotExecuted,
        ]
    );
    for bad in [
        json!({}),
        json!([1]),
        json!([{"count": -1}]),
        json!([{"uuid": "x"}]),
        json!([{"what": 1}]),
    ] {
        assert!(TransactResult::from_json(&bad).is_err(), "{bad}");
    }
}

// ---- against a real ovsdb-server ----

fn run(srv: &OvsdbServer, ops: &[Operation]) -> TransactResult {
    let params = transact_params(srv.db_name(), ops).to_string();
    let out = srv.ovsdb_client(&["transact", &params]).unwrap();
    TransactResult::from_json(&serde_json::from_str(&out).unwrap()).unwrap()
}

fn server() -> (OvsdbServer, DatabaseSchema) {
    (OvsdbServer::start(SchemaFile::Nb).unwrap(), nb())
}

#[test]
fn insert_select_update_mutate_delete_work_against_a_real_server() {
    let (srv, s) = server();
    let ops = vec![
        wait_absent("Logical_Switch_Port", "name", "p1"),
        insert("Logical_Switch_Port", row(&[("name", "p1".into())]), "p1"),
        insert(
            "Logical_Switch",
            row(&[
                ("name", "ls1".into()),
                ("ports", Value::named_uuid("p1")),
                ("external_ids", Value::map([("owner", "me"), ("old", "x")])),
            ]),
            "ls1",
        ),
        Operation::Comment("created by the ops test".into()),
    ];
    validate(&ops, &s).unwrap();
    let r = run(&srv, &ops);
    assert_eq!(r.first_error(&ops), None, "{r:?}");
    let names = r.named_uuids(&ops);
    let ls = names["ls1"];
    let p1 = names["p1"];

    // select with columns
    let sel = Operation::Select {
        table: "Logical_Switch".into(),
        where_: vec![Condition::uuid(ls)],
        columns: Some(vec!["name".into(), "ports".into(), "external_ids".into()]),
    };
    let r = run(&srv, std::slice::from_ref(&sel));
    let OperationResult::Rows(rows) = &r.results[0] else {
        panic!("{r:?}")
    };
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["name"], Value::from("ls1"));
    assert_eq!(
        s.column("Logical_Switch", "ports")
            .unwrap()
            .normalize(rows[0]["ports"].clone()),
        Value::set([p1])
    );

    // update only changed columns, mutate map keys, set elements
    let old = rows[0].clone();
    let mut new = old.clone();
    new.insert("name".into(), "ls1-renamed".into());
    let ops = vec![
        update_changed("Logical_Switch", ls, &old, &new).unwrap(),
        map_update(
            "Logical_Switch",
            ls,
            "external_ids",
            old["external_ids"].as_map().unwrap(),
            Value::map([("owner", "you"), ("add", "y")])
                .as_map()
                .unwrap(),
        )
        .unwrap(),
        insert("Logical_Switch_Port", row(&[("name", "p2".into())]), "p2"),
        set_insert(
            "Logical_Switch",
            ls,
            "ports",
            [Atom::NamedUuid("p2".into())],
        ),
        set_delete("Logical_Switch", ls, "ports", [p1]),
    ];
    validate(&ops, &s).unwrap();
    let r = run(&srv, &ops);
    assert_eq!(r.first_error(&ops), None, "{r:?}");
    assert_eq!(r.results[0], OperationResult::Count(1));
    assert_eq!(r.results[1], OperationResult::Count(1));
    let p2 = r.named_uuids(&ops)["p2"];
    let r = run(&srv, std::slice::from_ref(&sel));
    let OperationResult::Rows(rows) = &r.results[0] else {
        panic!("{r:?}")
    };
    assert_eq!(rows[0]["name"], Value::from("ls1-renamed"));
    assert_eq!(
        rows[0]["external_ids"],
        Value::map([("owner", "you"), ("add", "y")])
    );
    assert_eq!(
        s.column("Logical_Switch", "ports")
            .unwrap()
            .normalize(rows[0]["ports"].clone()),
        Value::set([p2])
    );

    // arithmetic mutate on an integer column, selected by an ordering condition
    let ops = vec![
        insert(
            "ACL",
            row(&[
                ("priority", 100i64.into()),
                ("direction", "to-lport".into()),
                ("match", "1".into()),
                ("action", "drop".into()),
            ]),
            "acl",
        ),
        Operation::Mutate {
            table: "ACL".into(),
            where_: vec![Condition::new("priority", Function::Ge, 100i64)],
            mutations: vec![Mutation::new("priority", Mutator::Add, 5i64)],
        },
        Operation::Select {
            table: "ACL".into(),
            where_: vec![Condition::new("priority", Function::Eq, 105i64)],
            columns: Some(vec!["priority".into()]),
        },
    ];
    validate(&ops, &s).unwrap();
    let r = run(&srv, &ops);
    assert_eq!(r.results[1], OperationResult::Count(1));
    assert_eq!(
        r.results[2],
        OperationResult::Rows(vec![row(&[("priority", 105i64.into())])])
    );

    // delete; the port it referenced is garbage-collected with it (not a root table)
    let ops = vec![
        delete("Logical_Switch", ls),
        Operation::Commit { durable: true },
    ];
    let r = run(&srv, &ops);
    assert_eq!(
        r.results,
        vec![OperationResult::Count(1), OperationResult::Empty]
    );
    let r = run(&srv, &[select("Logical_Switch_Port", vec![])]);
    assert_eq!(r.results[0], OperationResult::Rows(vec![]));
}

#[test]
fn server_errors_come_back_as_typed_results_with_details() {
    let (srv, _s) = server();
    let ghost = Uuid::from_u128(0x1111);

    // constraint violation: duplicate value in a unique index (Address_Set.name)
    let ops = vec![
        insert("Address_Set", row(&[("name", "dup".into())]), "a"),
        insert("Address_Set", row(&[("name", "dup".into())]), "b"),
    ];
    let e = run(&srv, &ops).first_error(&ops).unwrap();
    assert_eq!(
        (e.index, e.op, e.kind),
        (2, None, ErrorKind::ConstraintViolation)
    );
    assert!(
        e.details
            .as_deref()
            .unwrap()
            .contains("identical values (dup) for index on column \"name\""),
        "{e}"
    );

    // referential integrity: a strong reference to a row that does not exist
    let ops = vec![insert(
        "Logical_Switch",
        row(&[("ports", Value::set([ghost]))]),
        "ls",
    )];
    let e = run(&srv, &ops).first_error(&ops).unwrap();
    assert_eq!(e.kind, ErrorKind::ReferentialIntegrity, "{e}");
    assert!(
        e.details
            .as_deref()
            .unwrap()
            .contains("references nonexistent row"),
        "{e}"
    );

    // the wait guard trips when the row exists
    run(
        &srv,
        &[insert("Address_Set", row(&[("name", "x".into())]), "x")],
    );
    let ops = vec![
        wait_absent("Address_Set", "name", "x"),
        insert("Address_Set", row(&[("name", "x".into())]), "x2"),
    ];
    let r = run(&srv, &ops);
    let e = r.first_error(&ops).unwrap();
    assert_eq!(
        (e.index, e.op, e.kind),
        (0, Some("wait"), ErrorKind::TimedOut)
    );
    assert_eq!(r.results[1], OperationResult::NotExecuted);
    assert_eq!(
        e.to_string(),
        "operation 0 (wait) failed: timed out (\"where\" clause test failed)"
    );

    // abort rolls back what came before it
    let ops = vec![
        insert("Address_Set", row(&[("name", "y".into())]), "y"),
        Operation::Abort,
    ];
    let e = run(&srv, &ops).first_error(&ops).unwrap();
    assert_eq!((e.index, e.kind), (1, ErrorKind::Aborted));
    let r = run(
        &srv,
        &[select("Address_Set", vec![Condition::eq("name", "y")])],
    );
    assert_eq!(r.results[0], OperationResult::Rows(vec![]));

    // assert on a lock we do not hold
    let ops = vec![Operation::Assert {
        lock: "nobody".into(),
    }];
    let e = run(&srv, &ops).first_error(&ops).unwrap();
    assert_eq!(e.kind, ErrorKind::NotOwner);

    // an enum violation the server catches, were validation skipped
    let ops = vec![insert(
        "ACL",
        row(&[("direction", "sideways".into())]),
        "acl",
    )];
    let e = run(&srv, &ops).first_error(&ops).unwrap();
    assert_eq!(e.kind, ErrorKind::ConstraintViolation, "{e}");
    assert!(validate(&ops, &nb()).is_err());
}

/// `assert` only passes on the connection that holds the lock, so this one speaks raw
/// JSON-RPC over the server's unix socket (the real client is tested in its own module).
#[test]
fn assert_passes_for_the_lock_holder_against_a_real_server() {
    use std::io::Write;
    use std::os::unix::net::UnixStream;
    let (srv, s) = server();
    let path = srv.unix_remote().strip_prefix("unix:").unwrap().to_string();
    let conn = UnixStream::connect(path).unwrap();
    conn.set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    let mut tx = conn.try_clone().unwrap();
    let mut rx = serde_json::Deserializer::from_reader(conn).into_iter::<Json>();
    let mut call = |method: &str, params: Json, id: u64| -> Json {
        let msg = json!({"method": method, "params": params, "id": id});
        tx.write_all(msg.to_string().as_bytes()).unwrap();
        loop {
            let m = rx.next().unwrap().unwrap();
            if m["id"] == json!(id) {
                assert!(m["error"].is_null(), "{m}");
                return m["result"].clone();
            }
        }
    };
    assert_eq!(
        call("lock", json!(["ycloud_test"]), 1),
        json!({"locked": true})
    );
    let ops = vec![
        Operation::Assert {
            lock: "ycloud_test".into(),
        },
        insert("Address_Set", row(&[("name", "locked".into())]), "a"),
        Operation::Commit { durable: false },
    ];
    validate(&ops, &s).unwrap();
    let r = TransactResult::from_json(&call("transact", transact_params(srv.db_name(), &ops), 2))
        .unwrap();
    assert_eq!(r.first_error(&ops), None, "{r:?}");
    assert_eq!(r.results[0], OperationResult::Empty);
    assert!(matches!(r.results[1], OperationResult::Uuid(_)));
    // Another connection (ovsdb-client) does not hold it.
    let e = run(&srv, &ops).first_error(&ops).unwrap();
    assert_eq!((e.index, e.kind), (0, ErrorKind::NotOwner));
}
