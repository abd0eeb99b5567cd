use super::*;
use serde_json::json;

const NB: &str = "/usr/share/ovn/ovn-nb.ovsschema";
const SB: &str = "/usr/share/ovn/ovn-sb.ovsschema";
const VSWITCH: &str = "/usr/share/openvswitch/vswitch.ovsschema";

fn nb() -> DatabaseSchema {
    DatabaseSchema::from_file(NB).unwrap()
}

#[test]
fn the_installed_nb_schema_parses_with_its_known_facts() {
    let s = nb();
    assert_eq!(s.name, "OVN_Northbound");
    assert_eq!(s.version, "7.0.0");
    let proto = &s.tables["Load_Balancer"].columns["protocol"].type_;
    assert!(proto.is_optional());
    let allowed: Vec<String> = proto
        .key
        .enum_values
        .as_ref()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect();
    assert_eq!(allowed, ["sctp", "tcp", "udp"]);
    let ports = &s.tables["Logical_Switch"].columns["ports"].type_;
    assert_eq!(ports.key.ref_table.as_deref(), Some("Logical_Switch_Port"));
    assert_eq!(ports.key.ref_type, RefType::Strong);
    assert_eq!((ports.min, ports.max), (0, None));
    assert!(s.tables["Logical_Switch"].is_root);
    assert!(!s.tables["Logical_Switch_Port"].is_root);
    assert!(s.tables["Logical_Switch_Port"].has_index(&["name"]));
    assert!(s.tables["BFD"].has_index(&["dst_ip", "logical_port"]));
    assert!(!s.tables["Logical_Switch"].has_index(&["name"]));
    assert_eq!(s.tables["NB_Global"].max_rows, Some(1));
    let vips = &s.tables["Load_Balancer"].columns["vips"].type_;
    assert!(vips.is_map());
    assert_eq!(vips.value.as_ref().unwrap().atomic, AtomicType::String);
    assert!(s.tables.len() > 25);
}

#[test]
fn the_installed_sb_and_vswitch_schemas_parse_with_their_known_facts() {
    let sb = DatabaseSchema::from_file(SB).unwrap();
    assert_eq!(sb.name, "OVN_Southbound");
    assert!(sb.tables["Port_Binding"].has_index(&["datapath", "tunnel_key"]));
    assert!(sb.tables["Port_Binding"].has_index(&["logical_port"]));
    let tk = &sb.tables["Datapath_Binding"].columns["tunnel_key"]
        .type_
        .key;
    assert_eq!((tk.min_integer, tk.max_integer), (Some(1), Some(16777215)));

    let vs = DatabaseSchema::from_file(VSWITCH).unwrap();
    assert_eq!(
        (vs.name.as_str(), vs.version.as_str()),
        ("Open_vSwitch", "8.3.1")
    );
    let name = &vs.tables["Bridge"].columns["name"];
    assert!(!name.mutable, "Bridge.name is immutable in vswitch");
    let mirrors = &vs.tables["Bridge"].columns["mirrors"].type_;
    assert_eq!(mirrors.key.ref_table.as_deref(), Some("Mirror"));
    assert!(vs.tables["Open_vSwitch"].is_root);
    let ofport = &vs.tables["Interface"].columns["ofport_request"].type_.key;
    assert_eq!(
        (ofport.min_integer, ofport.max_integer),
        (Some(1), Some(65279))
    );
    assert!(vs.tables["Bridge"].columns["status"].ephemeral);
    assert!(!vs.tables["Bridge"].columns["ports"].ephemeral);
}

fn bad(table: &str, column: &str, v: Value) -> String {
    nb().validate_value(table, column, &v)
        .unwrap_err()
        .to_string()
}

#[test]
fn values_outside_the_column_type_are_rejected_naming_table_column_and_value() {
    assert_eq!(
        bad("Load_Balancer", "protocol", Value::from("http")),
        "table Load_Balancer, column protocol: value \"http\" is not one of \"sctp\", \"tcp\", \"udp\""
    );
    assert_eq!(
        bad("Logical_Switch", "name", Value::from(3i64)),
        "table Logical_Switch, column name: value 3 has an atom of type integer, the column wants string"
    );
    assert_eq!(
        bad("Load_Balancer", "protocol", Value::set(["tcp", "udp"])),
        "table Load_Balancer, column protocol: value [\"set\",[\"tcp\",\"udp\"]] has 2 elements, the column allows at most 1"
    );
    assert_eq!(
        bad("Logical_Switch_Port", "tag_request", Value::from(5000i64)),
        "table Logical_Switch_Port, column tag_request: value 5000 is outside the range 0..=4095"
    );
    assert_eq!(
        bad("ACL", "name", Value::from("x".repeat(64))),
        format!(
            "table ACL, column name: value \"{}\" has length 64, the column allows …..=63",
            "x".repeat(64)
        )
    );
    assert_eq!(
        bad("Logical_Switch", "colour", Value::from("red")),
        "table Logical_Switch: unknown column \"colour\""
    );
    assert_eq!(
        bad("Nope", "x", Value::from(1i64)),
        "unknown table \"Nope\""
    );
    assert_eq!(
        bad("Logical_Switch", "external_ids", Value::set(["a"])),
        "table Logical_Switch, column external_ids: value [\"set\",[\"a\"]] is not a map, the column is a map"
    );
    assert_eq!(
        bad("Logical_Switch", "name", Value::map([("a", "b")])),
        "table Logical_Switch, column name: value [\"map\",[[\"a\",\"b\"]]] is a map, the column is not"
    );
    assert_eq!(
        bad("Logical_Switch", "ports", Value::named_uuid("p")),
        "table Logical_Switch, column ports: value [\"named-uuid\",\"p\"] is a named-uuid, which only an operation in a transaction may use"
    );
    assert_eq!(
        bad("ACL", "direction", Value::empty_set()),
        "table ACL, column direction: value [\"set\",[]] has 0 elements, the column needs at least 1"
    );
}

#[test]
fn valid_values_pass_including_empty_sets_for_maps_and_named_uuids_in_transactions() {
    let s = nb();
    s.validate_value("Load_Balancer", "protocol", &Value::from("udp"))
        .unwrap();
    s.validate_value("Load_Balancer", "protocol", &Value::empty_set())
        .unwrap();
    s.validate_value("Load_Balancer", "vips", &Value::empty_set())
        .unwrap();
    s.validate_value(
        "Load_Balancer",
        "vips",
        &Value::map([("10.0.0.1:80", "10.1.0.2:8080")]),
    )
    .unwrap();
    s.check_value("Logical_Switch", "ports", &Value::named_uuid("p"), true)
        .unwrap();
    s.validate_value("Logical_Switch", "_uuid", &Value::uuid(uuid::Uuid::nil()))
        .unwrap();
}

#[test]
fn normalize_turns_bare_atoms_into_sets_and_empty_sets_into_maps() {
    let s = nb();
    let ports = s.column("Logical_Switch", "ports").unwrap();
    let u = uuid::Uuid::from_u128(7);
    assert_eq!(ports.normalize(Value::uuid(u)), Value::set([u]));
    let name = s.column("Logical_Switch", "name").unwrap();
    assert_eq!(name.normalize(Value::set(["a"])), Value::from("a"));
    let ext = s.column("Logical_Switch", "external_ids").unwrap();
    assert_eq!(ext.normalize(Value::empty_set()), Value::empty_map());
    assert_eq!(ext.default_value(), Value::empty_map());
    assert_eq!(name.default_value(), Value::from(""));
    assert_eq!(ports.default_value(), Value::empty_set());
}

#[test]
fn broken_schemas_are_rejected_naming_where() {
    let cases = [
        (
            json!({"name": "D", "tables": {}}),
            "invalid schema at schema.version: missing or not a string",
        ),
        (
            json!({"name": "D", "version": "1.0.0", "tables": {"T": {"columns": {"c": {"type": "float"}}}}}),
            "invalid schema at tables.T.columns.c.type: unknown atomic type \"float\"",
        ),
        (
            json!({"name": "D", "version": "1.0.0", "tables": {"T": {"columns": {"c": {"type": {"key": {"type": "uuid", "refTable": "U"}}}}}}}),
            "invalid schema at tables.T.columns.c: refTable \"U\" is not a table of this schema",
        ),
        (
            json!({"name": "D", "version": "1.0.0", "tables": {"T": {"columns": {"c": {"type": {"key": "string", "max": 0}}}}}}),
            "invalid schema at tables.T.columns.c.type.max: expected a positive integer or \"unlimited\", got 0",
        ),
        (
            json!({"name": "D", "version": "1.0.0", "tables": {"T": {"columns": {"c": {"type": "string"}}, "indexes": [["d"]]}}}),
            "invalid schema at tables.T.indexes: index names unknown column \"d\"",
        ),
        (
            json!({"name": "D", "version": "1.0.0", "tables": {"T": {"columns": {"c": {"type": {"key": {"type": "string", "enum": ["set", [1]]}}}}}}}),
            "invalid schema at tables.T.columns.c.type.key.enum: 1 has an atom of type integer, the column wants string",
        ),
    ];
    for (j, want) in cases {
        assert_eq!(DatabaseSchema::from_json(&j).unwrap_err().to_string(), want);
    }
    let err = DatabaseSchema::from_file("/nonexistent/x.ovsschema").unwrap_err();
    assert_eq!(
        err.to_string(),
        "reading schema file /nonexistent/x.ovsschema"
    );
}
