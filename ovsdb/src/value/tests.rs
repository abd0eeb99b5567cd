use super::*;
use proptest::prelude::*;
use serde_json::json;

fn atom_strategy() -> impl Strategy<Value = Atom> {
    prop_oneof![
        any::<i64>().prop_map(Atom::Integer),
        // Only finite reals exist in OVSDB; serde_json refuses NaN/inf anyway.
        any::<f64>()
            .prop_filter("finite", |r| r.is_finite())
            .prop_map(Atom::Real),
        any::<bool>().prop_map(Atom::Boolean),
        ".*".prop_map(Atom::String),
        any::<u128>().prop_map(|u| Atom::Uuid(Uuid::from_u128(u))),
        "[a-zA-Z_][a-zA-Z0-9_]{0,12}".prop_map(Atom::NamedUuid),
    ]
}

fn value_strategy() -> impl Strategy<Value = Value> {
    prop_oneof![
        atom_strategy().prop_map(Value::Atom),
        proptest::collection::btree_set(atom_strategy(), 0..6).prop_map(|s| Value::Set(s.into())),
        proptest::collection::btree_map(atom_strategy(), atom_strategy(), 0..6)
            .prop_map(|m| Value::Map(m.into())),
    ]
}

fn row_strategy() -> impl Strategy<Value = Row> {
    proptest::collection::btree_map("[a-z_]{1,10}", value_strategy(), 0..6)
}

proptest! {
    #[test]
    fn every_atom_survives_a_json_round_trip(a in atom_strategy()) {
        let text = serde_json::to_string(&a).unwrap();
        let back: Atom = serde_json::from_str(&text).unwrap();
        prop_assert_eq!(&back, &a);
        // The same through serde_json::Value, which is how the client hands us messages.
        let back2: Atom = serde_json::from_value(serde_json::to_value(&a).unwrap()).unwrap();
        prop_assert_eq!(back2, a);
    }

    #[test]
    fn every_value_survives_a_json_round_trip(v in value_strategy()) {
        let text = serde_json::to_string(&v).unwrap();
        let back: Value = serde_json::from_str(&text).unwrap();
        prop_assert_eq!(&back, &v);
        let back2: Value = serde_json::from_value(serde_json::to_value(&v).unwrap()).unwrap();
        prop_assert_eq!(back2, v);
    }

    #[test]
    fn a_one_element_set_written_as_a_bare_atom_reads_back_as_that_set(a in atom_strategy()) {
        let text = serde_json::to_string(&a).unwrap();
        let v: Value = serde_json::from_str(&text).unwrap();
        let set = Value::Set(AtomSet::from([a.clone()]));
        prop_assert_eq!(v.atoms().unwrap(), vec![&a]);
        let real = matches!(a, Atom::Real(_));
        prop_assert_eq!(v.normalize_shape(false, false, real, false), set);
    }

    #[test]
    fn every_row_survives_a_json_round_trip(r in row_strategy()) {
        let back: Row = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        prop_assert_eq!(back, r);
    }

    #[test]
    fn v1_update_notifications_survive_a_json_round_trip(
        ups in proptest::collection::btree_map(
            "[A-Z][a-z_]{0,8}",
            proptest::collection::btree_map(
                any::<u128>().prop_map(Uuid::from_u128),
                (proptest::option::of(row_strategy()), proptest::option::of(row_strategy()))
                    .prop_map(|(old, new)| RowUpdate { old, new }),
                0..4),
            0..4)
    ) {
        let text = serde_json::to_string(&ups).unwrap();
        let back: TableUpdates<RowUpdate> = serde_json::from_str(&text).unwrap();
        prop_assert_eq!(back, ups);
    }

    #[test]
    fn v2_update_notifications_survive_a_json_round_trip(
        ups in proptest::collection::btree_map(
            "[A-Z][a-z_]{0,8}",
            proptest::collection::btree_map(
                any::<u128>().prop_map(Uuid::from_u128),
                prop_oneof![
                    row_strategy().prop_map(RowUpdate2::Initial),
                    row_strategy().prop_map(RowUpdate2::Insert),
                    row_strategy().prop_map(RowUpdate2::Modify),
                    Just(RowUpdate2::Delete(None)),
                ],
                0..4),
            0..4)
    ) {
        let text = serde_json::to_string(&ups).unwrap();
        let back: TableUpdates<RowUpdate2> = serde_json::from_str(&text).unwrap();
        prop_assert_eq!(back, ups);
    }
}

#[test]
fn atoms_use_the_rfc_7047_wire_forms() {
    let u = Uuid::parse_str("36bb5fb4-4bd5-4b1e-9a04-7b1c0f6a5e1d").unwrap();
    assert_eq!(serde_json::to_value(Atom::Integer(-3)).unwrap(), json!(-3));
    assert_eq!(serde_json::to_value(Atom::Real(1.5)).unwrap(), json!(1.5));
    assert_eq!(
        serde_json::to_value(Atom::Boolean(true)).unwrap(),
        json!(true)
    );
    assert_eq!(serde_json::to_value(Atom::from("x")).unwrap(), json!("x"));
    assert_eq!(
        serde_json::to_value(Atom::Uuid(u)).unwrap(),
        json!(["uuid", "36bb5fb4-4bd5-4b1e-9a04-7b1c0f6a5e1d"])
    );
    assert_eq!(
        serde_json::to_value(Atom::NamedUuid("row1".into())).unwrap(),
        json!(["named-uuid", "row1"])
    );
}

#[test]
fn sets_and_maps_use_the_rfc_7047_wire_forms() {
    assert_eq!(
        serde_json::to_value(Value::set([1i64, 2])).unwrap(),
        json!(["set", [1, 2]])
    );
    assert_eq!(
        serde_json::to_value(Value::empty_set()).unwrap(),
        json!(["set", []])
    );
    assert_eq!(
        serde_json::to_value(Value::map([("a", "1"), ("b", "2")])).unwrap(),
        json!(["map", [["a", "1"], ["b", "2"]]])
    );
}

#[test]
fn sets_and_maps_compare_equal_whatever_order_the_server_wrote() {
    let a: Value = serde_json::from_value(json!(["set", [3, 1, 2]])).unwrap();
    let b: Value = serde_json::from_value(json!(["set", [1, 2, 3]])).unwrap();
    assert_eq!(a, b);
    let a: Value = serde_json::from_value(json!(["map", [["b", 1], ["a", 2]]])).unwrap();
    let b: Value = serde_json::from_value(json!(["map", [["a", 2], ["b", 1]]])).unwrap();
    assert_eq!(a, b);
}

#[test]
fn malformed_values_are_rejected_with_a_message_naming_the_problem() {
    let cases = [
        (json!(["set", [1, 1]]), "duplicate set element 1"),
        (
            json!(["map", [["a", 1], ["a", 2]]]),
            "duplicate map key \"a\"",
        ),
        (json!(["uuid", "not-a-uuid"]), "invalid uuid \"not-a-uuid\""),
        (json!(["named-uuid", "1abc"]), "invalid named-uuid \"1abc\""),
        (json!(["bag", []]), "unknown OVSDB value tag \"bag\""),
        (json!(["set", [["set", []]]]), "sets and maps do not nest"),
        (json!(["set"]), "missing its second element"),
        (json!(["set", [], 1]), "more than two elements"),
        (
            json!(18446744073709551615u64),
            "does not fit in 64 signed bits",
        ),
        (json!(null), "an OVSDB value"),
        (json!({"a": 1}), "an OVSDB value"),
    ];
    for (input, want) in cases {
        let err = serde_json::from_value::<Value>(input.clone())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(want),
            "{input}: error {err:?} should contain {want:?}"
        );
    }
}

#[test]
fn a_delete_in_an_update2_is_written_as_null() {
    let u = Uuid::nil();
    let mut t = BTreeMap::new();
    t.insert(u, RowUpdate2::Delete(None));
    let ups: TableUpdates<RowUpdate2> = BTreeMap::from([("T".to_string(), t)]);
    assert_eq!(
        serde_json::to_value(&ups).unwrap(),
        json!({"T": {"00000000-0000-0000-0000-000000000000": {"delete": null}}})
    );
}

#[test]
fn typed_conversions_name_the_expected_type_and_the_atom() {
    assert_eq!(String::from_atom(&Atom::from("x")).unwrap(), "x");
    assert_eq!(f64::from_atom(&Atom::Integer(2)).unwrap(), 2.0);
    let err = i64::from_atom(&Atom::from("x")).unwrap_err();
    assert_eq!(err.to_string(), "expected integer, got \"x\"");
}

proptest! {
    #[test]
    fn sorted_vector_sets_and_maps_behave_like_btree_sets_and_maps(
        steps in proptest::collection::vec(
            (any::<bool>(), atom_strategy(), atom_strategy()), 0..40),
    ) {
        let (mut set, mut set_model) = (AtomSet::new(), std::collections::BTreeSet::new());
        let (mut map, mut map_model) = (AtomMap::new(), BTreeMap::new());
        for (add, a, b) in steps {
            if add {
                prop_assert_eq!(set.insert(a.clone()), set_model.insert(a.clone()));
                prop_assert_eq!(map.insert(a.clone(), b.clone()), map_model.insert(a.clone(), b));
            } else {
                prop_assert_eq!(set.remove(&a), set_model.remove(&a));
                prop_assert_eq!(map.remove(&a), map_model.remove(&a));
            }
            prop_assert_eq!(set.contains(&a), set_model.contains(&a));
            prop_assert_eq!(map.get(&a), map_model.get(&a));
            if let Atom::String(s) = &a {
                prop_assert_eq!(map.get(s.as_str()), map_model.get(&a));
            }
        }
        prop_assert!(set.iter().eq(set_model.iter()));
        prop_assert!(map.iter().eq(map_model.iter()));
        prop_assert_eq!(&AtomSet::from(set_model.clone()), &set);
        prop_assert_eq!(&AtomMap::from(map_model.clone()), &map);
        // Collecting sorts and dedups; a repeated map key keeps its last value.
        let mut doubled: Vec<Atom> = set_model.iter().rev().cloned().collect();
        doubled.extend(set_model.iter().cloned());
        prop_assert_eq!(doubled.into_iter().collect::<AtomSet>(), set);
    }
}

#[test]
fn a_string_key_is_found_among_keys_of_every_atom_type() {
    let m = AtomMap::from([
        (Atom::Integer(1), Atom::from("int")),
        (Atom::Boolean(true), Atom::from("bool")),
        (Atom::from("k"), Atom::from("str")),
        (Atom::Uuid(Uuid::nil()), Atom::from("uuid")),
    ]);
    assert_eq!(m.get("k"), Some(&Atom::from("str")));
    assert_eq!(m.get("j"), None);
    assert_eq!(Value::Map(m.clone()).map_get("k"), Some(&Atom::from("str")));
    assert_eq!(
        [
            (Atom::from("k"), Atom::from("1")),
            (Atom::from("k"), Atom::from("2"))
        ]
        .into_iter()
        .collect::<AtomMap>()
        .get("k"),
        Some(&Atom::from("2")),
        "the last value of a repeated key wins, as in a BTreeMap"
    );
}

#[test]
fn duplicates_on_the_wire_are_still_errors() {
    let e = serde_json::from_str::<Value>(r#"["set",["a","b","a"]]"#).unwrap_err();
    assert!(e.to_string().contains("duplicate set element \"a\""), "{e}");
    let e = serde_json::from_str::<Value>(r#"["map",[["k","1"],["k","2"]]]"#).unwrap_err();
    assert!(e.to_string().contains("duplicate map key \"k\""), "{e}");
}
