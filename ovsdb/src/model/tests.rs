use super::*;
use crate::models::{nb, vswitch};
use crate::ops::{self, OperationResult, TransactResult};
use std::str::FromStr;
use ycloud_testsupport::ovsdb_server::{OvsdbServer, SchemaFile};

fn lb() -> nb::LoadBalancer {
    nb::LoadBalancer {
        name: "svc-a".into(),
        protocol: Some(nb::LoadBalancerProtocol::Udp),
        vips: BTreeMap::from([("10.96.0.10:53".into(), "10.1.0.2:53,10.1.0.3:53".into())]),
        selection_fields: BTreeSet::from([
            nb::LoadBalancerSelectionFields::IpSrc,
            nb::LoadBalancerSelectionFields::TpDst,
        ]),
        external_ids: BTreeMap::from([("owner".into(), "ns/svc-a".into())]),
        options: BTreeMap::from([("reject".into(), "true".into())]),
        ..Default::default()
    }
}

fn lsp() -> nb::LogicalSwitchPort {
    nb::LogicalSwitchPort {
        name: "pod-a".into(),
        addresses: BTreeSet::from(["0a:00:00:00:00:01 10.1.0.2".into()]),
        port_security: BTreeSet::from(["0a:00:00:00:00:01 10.1.0.2".into()]),
        enabled: Some(true),
        tag_request: Some(7),
        r#type: String::new(),
        options: BTreeMap::from([("requested-chassis".into(), "node1".into())]),
        ..Default::default()
    }
}

fn acl() -> nb::Acl {
    nb::Acl {
        action: nb::AclAction::AllowRelated,
        direction: nb::AclDirection::ToLport,
        priority: 1001,
        r#match: "ip4.src == 10.1.0.0/16".into(),
        log: true,
        severity: Some(nb::AclSeverity::Warning),
        name: Some("allow-in".into()),
        ..Default::default()
    }
}

fn bridge() -> vswitch::Bridge {
    vswitch::Bridge {
        name: "br-int".into(),
        fail_mode: Some(vswitch::BridgeFailMode::Secure),
        datapath_type: "netdev".into(),
        protocols: BTreeSet::from([
            vswitch::BridgeProtocols::OpenFlow13,
            vswitch::BridgeProtocols::OpenFlow15,
        ]),
        flood_vlans: BTreeSet::from([10, 20]),
        other_config: BTreeMap::from([("disable-in-band".into(), "true".into())]),
        ..Default::default()
    }
}

#[test]
fn models_survive_to_row_then_from_row() {
    let l = lb();
    assert_eq!(nb::LoadBalancer::from_row(&l.to_row()).unwrap(), l);
    let p = lsp();
    assert_eq!(nb::LogicalSwitchPort::from_row(&p.to_row()).unwrap(), p);
    let a = acl();
    assert_eq!(nb::Acl::from_row(&a.to_row()).unwrap(), a);
    let b = bridge();
    assert_eq!(vswitch::Bridge::from_row(&b.to_row()).unwrap(), b);
    // With a _uuid in the row, it comes back too.
    let mut row = l.to_row();
    let u = Uuid::from_u128(42);
    row.insert("_uuid".into(), Value::uuid(u));
    assert_eq!(nb::LoadBalancer::from_row(&row).unwrap().uuid, u);
    // The row has exactly the model's columns, and they validate against the schema.
    assert_eq!(
        l.to_row().keys().map(String::as_str).collect::<Vec<_>>(),
        nb::LoadBalancer::COLUMNS
    );
    nb::schema()
        .validate_row(nb::LoadBalancer::TABLE, &l.to_row())
        .unwrap();
    nb::schema()
        .validate_row(nb::Acl::TABLE, &a.to_row())
        .unwrap();
    vswitch::schema()
        .validate_row(vswitch::Bridge::TABLE, &b.to_row())
        .unwrap();
}

#[test]
fn enum_columns_convert_to_and_from_their_strings() {
    assert_eq!(
        nb::LoadBalancerProtocol::from_str("sctp").unwrap(),
        nb::LoadBalancerProtocol::Sctp
    );
    assert_eq!(nb::AclAction::AllowRelated.as_str(), "allow-related");
    assert_eq!(nb::AclDirection::FromLport.to_string(), "from-lport");
    assert_eq!(
        serde_json::to_string(&nb::AclAction::AllowStateless).unwrap(),
        "\"allow-stateless\""
    );
    assert_eq!(
        serde_json::from_str::<nb::NatType>("\"dnat_and_snat\"").unwrap(),
        nb::NatType::DnatAndSnat
    );
    assert_eq!(nb::LoadBalancerProtocol::ALL.len(), 3);
    let e = nb::LoadBalancerProtocol::from_str("http").unwrap_err();
    assert_eq!(
        e.to_string(),
        "\"http\" is not one of \"sctp\", \"tcp\", \"udp\""
    );
    for v in vswitch::BridgeProtocols::ALL {
        assert_eq!(vswitch::BridgeProtocols::from_str(v.as_str()).unwrap(), *v);
    }
}

#[test]
fn from_row_names_table_column_and_problem() {
    let mut row = lb().to_row();
    row.insert("protocol".into(), Value::from("http"));
    assert_eq!(
        nb::LoadBalancer::from_row(&row).unwrap_err().to_string(),
        "table Load_Balancer, column protocol: expected one of \"sctp\", \"tcp\", \"udp\", got \"http\""
    );
    row.remove("protocol");
    assert_eq!(
        nb::LoadBalancer::from_row(&row).unwrap_err().to_string(),
        "table Load_Balancer: the row has no column protocol (is it monitored?)"
    );
    let mut row = lsp().to_row();
    row.insert("tag_request".into(), Value::set([1i64, 2]));
    assert_eq!(
        nb::LogicalSwitchPort::from_row(&row)
            .unwrap_err()
            .to_string(),
        "table Logical_Switch_Port, column tag_request: expected at most one element, got 2"
    );
}

#[test]
fn an_update_writes_set_and_cleared_columns_and_leaves_kept_ones_alone() {
    let up = nb::LoadBalancerUpdate {
        vips: Patch::Set(BTreeMap::from([("1.2.3.4:80".into(), "5.6.7.8:80".into())])),
        protocol: Patch::Clear,
        external_ids: Patch::Clear,
        selection_fields: Patch::Clear,
        ..Default::default()
    };
    let row = up.to_row();
    assert_eq!(
        row,
        Row::from([
            ("external_ids".to_string(), Value::empty_map()),
            ("protocol".to_string(), Value::empty_set()),
            ("selection_fields".to_string(), Value::empty_set()),
            (
                "vips".to_string(),
                Value::map([("1.2.3.4:80", "5.6.7.8:80")])
            ),
        ])
    );
    assert!(nb::LoadBalancerUpdate::default().to_row().is_empty());
    let up = nb::AclUpdate {
        priority: Patch::Clear,
        ..Default::default()
    };
    assert_eq!(up.to_row()["priority"], Value::from(0i64));
    nb::schema().validate_row("Load_Balancer", &row).unwrap();
}

fn changed(db: &DatabaseSchema, f: impl FnOnce(&mut DatabaseSchema)) -> DatabaseSchema {
    let mut s = db.clone();
    f(&mut s);
    s
}

#[test]
fn check_compat_accepts_the_installed_schemas_and_lists_every_mismatch() {
    let installed = DatabaseSchema::from_file("/usr/share/ovn/ovn-nb.ovsschema").unwrap();
    nb::check_compat(&installed, None).unwrap();
    let installed_vs =
        DatabaseSchema::from_file("/usr/share/openvswitch/vswitch.ovsschema").unwrap();
    vswitch::check_compat(&installed_vs, None).unwrap();
    // A newer minor version with an extra column is fine.
    let newer = changed(&installed, |s| {
        s.version = "7.1.0".into();
        let lb = s.tables.get_mut("Load_Balancer").unwrap();
        let mut extra = lb.columns["name"].clone();
        extra.name = "extra".into();
        lb.columns.insert("extra".into(), extra);
    });
    nb::check_compat(&newer, None).unwrap();

    let broken = changed(&installed, |s| {
        s.version = "8.0.0".into();
        s.tables.remove("Meter");
        s.tables
            .get_mut("Load_Balancer")
            .unwrap()
            .columns
            .remove("vips");
        let proto = &mut s
            .tables
            .get_mut("Load_Balancer")
            .unwrap()
            .columns
            .get_mut("protocol")
            .unwrap()
            .type_;
        proto
            .key
            .enum_values
            .as_mut()
            .unwrap()
            .insert(Atom::from("quic"));
    });
    let report = nb::check_compat(&broken, None).unwrap_err();
    assert_eq!(
        report.to_string(),
        "the server's schema (version 8.0.0) does not fit the models (generated from 7.0.0):\n\
         \x20 - schema version 8.0.0 on the server, the models were generated from 7.0.0 (major versions differ)\n\
         \x20 - column Load_Balancer.protocol is string in {\"quic\", \"sctp\", \"tcp\", \"udp\"} [0..1] on the server, the models expect string in {\"sctp\", \"tcp\", \"udp\"} [0..1]\n\
         \x20 - column Load_Balancer.vips is missing on the server\n\
         \x20 - table Meter is missing on the server"
    );
    // Restricted to the tables a caller uses, only their problems count.
    let only_ls = nb::check_compat(&broken, Some(&["Logical_Switch"])).unwrap_err();
    assert_eq!(only_ls.mismatches.len(), 1, "{only_ls}");
    let e = nb::check_compat(&installed_vs, None).unwrap_err();
    assert!(e.mismatches.contains(&Mismatch::DatabaseName {
        ours: "OVN_Northbound".into(),
        server: "Open_vSwitch".into()
    }));
}

// ---- against a real ovsdb-server ----

fn transact(srv: &OvsdbServer, ops: &[ops::Operation]) -> TransactResult {
    let out = srv
        .ovsdb_client(&[
            "transact",
            &ops::transact_params(srv.db_name(), ops).to_string(),
        ])
        .unwrap();
    let r = TransactResult::from_json(&serde_json::from_str(&out).unwrap()).unwrap();
    assert_eq!(r.first_error(ops), None, "{r:?}");
    r
}

#[test]
fn nb_models_written_to_a_real_server_read_back_equal_from_select_and_dump() {
    let srv = OvsdbServer::start(SchemaFile::Nb).unwrap();
    // The server's own schema passes the compatibility check.
    let served = DatabaseSchema::from_json(
        &serde_json::from_str(&srv.ovsdb_client(&["get-schema", "OVN_Northbound"]).unwrap())
            .unwrap(),
    )
    .unwrap();
    nb::check_compat(&served, None).unwrap();

    let (l, p, a) = (lb(), lsp(), acl());
    let mut ls_row = nb::LogicalSwitch {
        name: "ls-a".into(),
        ..Default::default()
    }
    .to_row();
    // References to rows of the same transaction go by named UUID.
    ls_row.insert("ports".into(), Value::named_uuid("p"));
    ls_row.insert("acls".into(), Value::named_uuid("a"));
    ls_row.insert("load_balancer".into(), Value::named_uuid("l"));
    let txn = vec![
        ops::insert(nb::LoadBalancer::TABLE, l.to_row(), "l"),
        ops::insert(nb::LogicalSwitchPort::TABLE, p.to_row(), "p"),
        ops::insert(nb::Acl::TABLE, a.to_row(), "a"),
        ops::insert(nb::LogicalSwitch::TABLE, ls_row, "ls"),
    ];
    ops::validate(&txn, &served).unwrap();
    let names = transact(&srv, &txn).named_uuids(&txn);

    let read = |table: &str| -> Vec<Row> {
        match &transact(&srv, &[ops::select(table, vec![])]).results[0] {
            OperationResult::Rows(r) => r.clone(),
            other => panic!("{other:?}"),
        }
    };
    let got = nb::LoadBalancer::from_row(&read("Load_Balancer")[0]).unwrap();
    assert_eq!(
        got,
        nb::LoadBalancer {
            uuid: names["l"],
            ..l.clone()
        }
    );
    let got = nb::LogicalSwitchPort::from_row(&read("Logical_Switch_Port")[0]).unwrap();
    assert_eq!(
        got,
        nb::LogicalSwitchPort {
            uuid: names["p"],
            ..p.clone()
        }
    );
    let got = nb::Acl::from_row(&read("ACL")[0]).unwrap();
    assert_eq!(
        got,
        nb::Acl {
            uuid: names["a"],
            ..a.clone()
        }
    );
    let ls = nb::LogicalSwitch::from_row(&read("Logical_Switch")[0]).unwrap();
    assert_eq!(
        (ls.uuid, ls.ports.clone(), ls.acls.clone()),
        (
            names["ls"],
            BTreeSet::from([names["p"]]),
            BTreeSet::from([names["a"]])
        )
    );

    // The dump's raw wire values (one-element sets as bare atoms) read the same.
    let dump = srv.dump_json();
    let rows: BTreeMap<Uuid, Row> = serde_json::from_value(dump["Load_Balancer"].clone()).unwrap();
    let (u, row) = rows.into_iter().next().unwrap();
    let mut row = row;
    row.insert("_uuid".into(), Value::uuid(u));
    assert_eq!(
        nb::LoadBalancer::from_row(&row).unwrap(),
        nb::LoadBalancer {
            uuid: names["l"],
            ..l.clone()
        }
    );

    // An update form and update_changed both change only what they name.
    let up = nb::LoadBalancerUpdate {
        protocol: Patch::Clear,
        ..Default::default()
    };
    let mut l2 = nb::LoadBalancer {
        uuid: names["l"],
        ..l.clone()
    };
    l2.vips.insert("10.96.0.11:53".into(), "10.1.0.4:53".into());
    let txn: Vec<_> = [
        Some(ops::update(
            nb::LoadBalancer::TABLE,
            names["l"],
            up.to_row(),
        )),
        ops::update_changed(
            nb::LoadBalancer::TABLE,
            names["l"],
            &l.to_row(),
            &l2.to_row(),
        ),
    ]
    .into_iter()
    .flatten()
    .collect();
    assert_eq!(
        txn[1].to_json()["row"].as_object().unwrap().len(),
        1,
        "only vips changed"
    );
    transact(&srv, &txn);
    let got = nb::LoadBalancer::from_row(&read("Load_Balancer")[0]).unwrap();
    assert_eq!(
        got,
        nb::LoadBalancer {
            protocol: None,
            ..l2
        }
    );
}

#[test]
fn vswitch_models_written_to_a_real_server_read_back_equal() {
    let srv = OvsdbServer::start(SchemaFile::Vswitch).unwrap();
    let b = bridge();
    let iface = vswitch::Interface {
        name: "veth0".into(),
        r#type: "system".into(),
        ofport_request: Some(10),
        mtu_request: Some(1400),
        ..Default::default()
    };
    let mut port = vswitch::Port {
        name: "veth0".into(),
        tag: Some(100),
        ..Default::default()
    }
    .to_row();
    port.insert("interfaces".into(), Value::named_uuid("i"));
    let mut br = b.to_row();
    br.insert("ports".into(), Value::named_uuid("p"));
    let mut ovs = vswitch::OpenVswitch::default().to_row();
    ovs.insert("bridges".into(), Value::named_uuid("b"));
    let txn = vec![
        ops::insert(vswitch::Interface::TABLE, iface.to_row(), "i"),
        ops::insert(vswitch::Port::TABLE, port, "p"),
        ops::insert(vswitch::Bridge::TABLE, br, "b"),
        ops::insert(vswitch::OpenVswitch::TABLE, ovs, "o"),
    ];
    ops::validate(&txn, vswitch::schema()).unwrap();
    let names = transact(&srv, &txn).named_uuids(&txn);
    let dump = srv.dump_json();
    let read = |table: &str, u: Uuid| -> Row {
        let mut r: Row = serde_json::from_value(dump[table][u.to_string()].clone()).unwrap();
        r.insert("_uuid".into(), Value::uuid(u));
        r
    };
    let got = vswitch::Bridge::from_row(&read("Bridge", names["b"])).unwrap();
    assert_eq!(
        got,
        vswitch::Bridge {
            uuid: names["b"],
            ports: BTreeSet::from([names["p"]]),
            ..b
        }
    );
    let got = vswitch::Interface::from_row(&read("Interface", names["i"])).unwrap();
    assert_eq!(
        got,
        vswitch::Interface {
            uuid: names["i"],
            ..iface
        }
    );
    let got = vswitch::Port::from_row(&read("Port", names["p"])).unwrap();
    assert_eq!(
        (got.tag, got.interfaces),
        (Some(100), BTreeSet::from([names["i"]]))
    );
    let ovs = vswitch::OpenVswitch::from_row(&read("Open_vSwitch", names["o"])).unwrap();
    assert_eq!(ovs.bridges, BTreeSet::from([names["b"]]));
}

#[test]
fn models_read_from_a_cache_snapshot() {
    use crate::cache::{Cache, UpdateKind};
    let schema = std::sync::Arc::new(nb::schema().clone());
    let cache = Cache::new(
        schema,
        BTreeMap::from([("Load_Balancer".to_string(), None)]),
    )
    .unwrap();
    let u = Uuid::from_u128(9);
    let mut row = lb().to_row();
    // update2 omits default columns; the cache fills them back in.
    row.remove("health_check");
    row.remove("ip_port_mappings");
    let j = serde_json::json!({"Load_Balancer": {u.to_string(): {"initial": row}}});
    cache.apply(UpdateKind::Update2, &j).unwrap();
    let s = cache.snapshot();
    assert_eq!(
        s.models::<nb::LoadBalancer>().unwrap(),
        vec![nb::LoadBalancer { uuid: u, ..lb() }]
    );
    assert_eq!(
        s.model::<nb::LoadBalancer>(&u).unwrap().unwrap().name,
        "svc-a"
    );
}
