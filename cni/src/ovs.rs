//! The node's Open_vSwitch database, through `ycloud-ovsdb`: plug and unplug pod ports on
//! the integration bridge, wait for ovn-controller's `ovn-installed`, list our ports for GC.
//!
//! Every Interface we create carries ownership keys in `external_ids`
//! (`ycloud.io/container-id`, `ycloud.io/ifname`, pod namespace/name): GC only ever looks at
//! rows with those keys, never at ports someone else made.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value as Json;
use uuid::Uuid;
use ycloud_ovsdb::ops::{self, Condition, Function, Mutation, Mutator, Operation, Until};
use ycloud_ovsdb::value::{Atom, Row, Value};
use ycloud_ovsdb::{Client, ClientConfig};

use crate::error::{CniError, code};

pub const KEY_CONTAINER: &str = "ycloud.io/container-id";
pub const KEY_IFNAME: &str = "ycloud.io/ifname";
pub const KEY_POD_NAMESPACE: &str = "ycloud.io/pod-namespace";
pub const KEY_POD_NAME: &str = "ycloud.io/pod-name";
pub const KEY_IFACE_ID: &str = "iface-id";
pub const KEY_ATTACHED_MAC: &str = "attached-mac";
pub const KEY_OVN_INSTALLED: &str = "ovn-installed";

fn ovs_err(step: impl Into<String>) -> impl FnOnce(ycloud_ovsdb::Error) -> CniError {
    let step = step.into();
    move |e| CniError::new(code::OVS, format!("{step}: {e}"))
}

/// A port of ours found on the bridge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnedPort {
    pub name: String,
    pub container_id: String,
    pub ifname: String,
    pub external_ids: BTreeMap<String, String>,
}

#[derive(Debug, Clone)]
pub struct Ovs {
    client: Client,
    bridge: String,
}

fn string_map(v: Option<&Value>) -> BTreeMap<String, String> {
    v.and_then(Value::as_map)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.as_str()?.to_string(), v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

fn uuid_of(row: &Row) -> Option<Uuid> {
    row.get("_uuid")
        .and_then(Value::as_atom)
        .and_then(Atom::as_uuid)
}

impl Ovs {
    pub async fn connect(remote: &str, bridge: &str) -> Result<Ovs, CniError> {
        let mut cfg = ClientConfig::new(vec![remote.to_string()], "Open_vSwitch");
        cfg.request_timeout = Duration::from_secs(10);
        let (client, _events) = Client::connect(cfg).await.map_err(ovs_err(format!(
            "connecting to the Open_vSwitch database at {remote}"
        )))?;
        Ok(Ovs {
            client,
            bridge: bridge.to_string(),
        })
    }

    pub fn bridge(&self) -> &str {
        &self.bridge
    }

    async fn select(&self, table: &str, where_: Vec<Condition>) -> Result<Vec<Row>, CniError> {
        let res = self
            .client
            .transact(&[ops::select(table, where_)])
            .await
            .map_err(ovs_err(format!("reading {table}")))?;
        match res.results.into_iter().next() {
            Some(ops::OperationResult::Rows(rows)) => Ok(rows),
            other => Err(CniError::new(
                code::OVS,
                format!("select on {table}: unexpected result {other:?}"),
            )),
        }
    }

    /// Plugs port `name` with one Interface with `external_ids` and the columns of `extra`
    /// (`type`, `mac`, …; none: a system device) into the bridge, in one transaction. A port of that name left by an
    /// earlier attempt is replaced in the same transaction: the retry recreated the veth, and
    /// ovs-vswitchd (userspace datapath) only reopens a device for a new Interface row.
    pub async fn add_port(
        &self,
        name: &str,
        external_ids: &BTreeMap<String, String>,
        extra: Row,
    ) -> Result<(), CniError> {
        let bridges = self
            .select("Bridge", vec![Condition::eq("name", self.bridge.as_str())])
            .await?;
        let bridge = bridges.first().and_then(uuid_of).ok_or_else(|| {
            CniError::new(
                code::OVS,
                format!(
                    "bridge {} does not exist in the Open_vSwitch database",
                    self.bridge
                ),
            )
        })?;
        let ids = Value::map(external_ids.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let old_ports = self
            .select("Port", vec![Condition::eq("name", name)])
            .await?;
        let mut ops: Vec<Operation> = Vec::new();
        match old_ports.first().and_then(uuid_of) {
            Some(old) => ops.push(Operation::Mutate {
                table: "Bridge".into(),
                where_: vec![Condition::new(
                    "ports",
                    Function::Includes,
                    Value::uuid(old),
                )],
                mutations: vec![Mutation::new("ports", Mutator::Delete, Value::uuid(old))],
            }),
            // Two ADDs racing for one name: the second fails here instead of making a
            // duplicate port that ovs-vswitchd would refuse.
            None => ops.push(ops::wait_absent("Interface", "name", name)),
        }
        ops.extend([
            ops::insert(
                "Interface",
                extra
                    .into_iter()
                    .chain([
                        ("name".to_string(), Value::from(name)),
                        ("external_ids".to_string(), ids),
                    ])
                    .collect(),
                "iface",
            ),
            ops::insert(
                "Port",
                Row::from([
                    ("name".to_string(), Value::from(name)),
                    ("interfaces".to_string(), Value::named_uuid("iface")),
                ]),
                "port",
            ),
            Operation::Mutate {
                table: "Bridge".into(),
                where_: vec![Condition::uuid(bridge)],
                mutations: vec![Mutation::new(
                    "ports",
                    Mutator::Insert,
                    Value::named_uuid("port"),
                )],
            },
        ]);
        self.client
            .transact(&ops)
            .await
            .map_err(ovs_err(format!("adding port {name} to {}", self.bridge)))?;
        Ok(())
    }

    /// Removes port `name` from every bridge (the Port and its Interfaces go with it: they
    /// are not root rows). Absent port: nothing to do.
    pub async fn del_port(&self, name: &str) -> Result<bool, CniError> {
        let ports = self
            .select("Port", vec![Condition::eq("name", name)])
            .await?;
        let Some(port) = ports.first().and_then(uuid_of) else {
            return Ok(false);
        };
        let op = Operation::Mutate {
            table: "Bridge".into(),
            where_: vec![Condition::new(
                "ports",
                Function::Includes,
                Value::uuid(port),
            )],
            mutations: vec![Mutation::new("ports", Mutator::Delete, Value::uuid(port))],
        };
        self.client
            .transact(&[op])
            .await
            .map_err(ovs_err(format!("removing port {name}")))?;
        Ok(true)
    }

    /// Removes port `name` (if any) and waits until ovs-vswitchd has applied that, so the
    /// device is closed before a new one of the same name is plugged. Plugging right away
    /// would let ovs-vswitchd keep its old handle on the name (for the userspace datapath, an
    /// AF_PACKET socket bound to the deleted device): the port would exist and pass nothing.
    pub async fn del_port_synced(&self, name: &str, timeout: Duration) -> Result<bool, CniError> {
        let ports = self
            .select("Port", vec![Condition::eq("name", name)])
            .await?;
        let Some(port) = ports.first().and_then(uuid_of) else {
            return Ok(false);
        };
        let ops = [
            Operation::Mutate {
                table: "Bridge".into(),
                where_: vec![Condition::new(
                    "ports",
                    Function::Includes,
                    Value::uuid(port),
                )],
                mutations: vec![Mutation::new("ports", Mutator::Delete, Value::uuid(port))],
            },
            Operation::Mutate {
                table: "Open_vSwitch".into(),
                where_: vec![],
                mutations: vec![Mutation::new("next_cfg", Mutator::Add, Value::from(1i64))],
            },
            Operation::Select {
                table: "Open_vSwitch".into(),
                where_: vec![],
                columns: Some(vec!["next_cfg".into()]),
            },
        ];
        let res = self
            .client
            .transact(&ops)
            .await
            .map_err(ovs_err(format!("removing port {name}")))?;
        let next_cfg = match res.results.get(2) {
            Some(ops::OperationResult::Rows(rows)) => rows
                .first()
                .and_then(|r| r.get("next_cfg"))
                .and_then(Value::as_atom)
                .and_then(Atom::as_integer),
            _ => None,
        }
        .ok_or_else(|| CniError::new(code::OVS, "reading Open_vSwitch next_cfg: no value"))?;
        let wait = Operation::Wait {
            table: "Open_vSwitch".into(),
            where_: vec![Condition::new(
                "cur_cfg",
                Function::Ge,
                Value::from(next_cfg),
            )],
            columns: vec!["cur_cfg".into()],
            until: Until::Ne,
            rows: vec![],
            timeout: Some(timeout.as_millis() as u64),
        };
        match self.client.transact(&[wait]).await {
            Ok(_) => Ok(true),
            Err(ycloud_ovsdb::Error::Timeout { .. }) => Err(CniError::new(
                code::TRY_AGAIN_LATER,
                format!(
                    "ovs-vswitchd did not apply the removal of port {name} within {} ms",
                    timeout.as_millis()
                ),
            )),
            Err(e) => Err(ovs_err(format!(
                "waiting for ovs-vswitchd after removing {name}"
            ))(e)),
        }
    }

    /// `external_ids` of Interface `name`, if it exists.
    pub async fn interface_ids(
        &self,
        name: &str,
    ) -> Result<Option<BTreeMap<String, String>>, CniError> {
        let rows = self
            .select("Interface", vec![Condition::eq("name", name)])
            .await?;
        Ok(rows.first().map(|r| string_map(r.get("external_ids"))))
    }

    /// Whether port `name` is on our bridge.
    pub async fn port_on_bridge(&self, name: &str) -> Result<bool, CniError> {
        let ports = self
            .select("Port", vec![Condition::eq("name", name)])
            .await?;
        let Some(port) = ports.first().and_then(uuid_of) else {
            return Ok(false);
        };
        let bridges = self
            .select(
                "Bridge",
                vec![
                    Condition::eq("name", self.bridge.as_str()),
                    Condition::new("ports", Function::Includes, Value::uuid(port)),
                ],
            )
            .await?;
        Ok(!bridges.is_empty())
    }

    /// Waits until ovn-controller marks Interface `name` with `ovn-installed=true`, i.e. its
    /// flows are in OVS and the pod's first packet will go through. The server holds our
    /// `wait` operation and re-evaluates it on every change: no polling.
    pub async fn wait_ovn_installed(&self, name: &str, timeout: Duration) -> Result<(), CniError> {
        let op = Operation::Wait {
            table: "Interface".into(),
            where_: vec![
                Condition::eq("name", name),
                Condition::new(
                    "external_ids",
                    Function::Includes,
                    Value::map([(KEY_OVN_INSTALLED, "true")]),
                ),
            ],
            columns: vec!["name".into()],
            until: Until::Eq,
            rows: vec![Row::from([("name".to_string(), Value::from(name))])],
            timeout: Some(timeout.as_millis() as u64),
        };
        match self.client.transact(&[op]).await {
            Ok(_) => Ok(()),
            Err(ycloud_ovsdb::Error::Timeout { .. }) => Err(CniError::new(
                code::OVN_INSTALL_TIMEOUT,
                format!("ovn-controller did not set ovn-installed on interface {name} within {} ms", timeout.as_millis()),
            )
            .with_details("is ovn-controller running on this node, and does the pod's logical switch port exist in the northbound database?")),
            Err(e) => Err(ovs_err(format!("waiting for ovn-installed on {name}"))(e)),
        }
    }

    /// Our ports (Interfaces with [`KEY_CONTAINER`]), for GC.
    pub async fn owned_ports(&self) -> Result<Vec<OwnedPort>, CniError> {
        let rows = self.select("Interface", vec![]).await?;
        Ok(rows
            .iter()
            .filter_map(|r| {
                let ids = string_map(r.get("external_ids"));
                let name = r.get("name")?.as_atom()?.as_str()?.to_string();
                Some(OwnedPort {
                    name,
                    container_id: ids.get(KEY_CONTAINER)?.clone(),
                    ifname: ids.get(KEY_IFNAME).cloned().unwrap_or_default(),
                    external_ids: ids,
                })
            })
            .collect())
    }

    /// `(interface name, value)` of every Interface whose `external_ids` has `key`.
    pub async fn ports_with_key(&self, key: &str) -> Result<Vec<(String, String)>, CniError> {
        let rows = self.select("Interface", vec![]).await?;
        Ok(rows
            .iter()
            .filter_map(|r| {
                let v = string_map(r.get("external_ids")).remove(key)?;
                Some((r.get("name")?.as_atom()?.as_str()?.to_string(), v))
            })
            .collect())
    }

    /// Sets keys of `Open_vSwitch.other_config` (e.g. `hw-offload`).
    pub async fn set_other_config(&self, pairs: &[(&str, &str)]) -> Result<(), CniError> {
        let rows = self.select("Open_vSwitch", vec![]).await?;
        let root = rows
            .first()
            .and_then(uuid_of)
            .ok_or_else(|| CniError::new(code::OVS, "the Open_vSwitch table has no row"))?;
        let op = ops::map_set_keys(
            "Open_vSwitch",
            root,
            "other_config",
            pairs.iter().map(|(k, v)| (*k, *v)),
        );
        self.client
            .transact(&[op])
            .await
            .map_err(ovs_err("setting Open_vSwitch other_config"))?;
        Ok(())
    }

    /// For STATUS: the database answers.
    pub async fn ping(&self) -> Result<(), CniError> {
        self.client
            .echo(Json::Array(vec![]))
            .await
            .map_err(ovs_err("the Open_vSwitch database does not answer"))?;
        Ok(())
    }
}
