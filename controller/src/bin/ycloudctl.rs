//! `ycloudctl`: operator tools for ycloud. Also works as a kubectl plugin: install it (or a
//! symlink to it) as `kubectl-ycloud` on the PATH and run `kubectl ycloud offload-check`.
//!
//! Exit codes: 0 = checked and fine, 1 = checked and not fine (e.g. a service-path flow
//! tc cannot offload), 2 = could not check (OVS unreachable, bad input).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use ycloud_controller::offload::{self, OvsCtl, OvsSource, SavedDumps, Scope};

#[derive(Parser)]
#[command(
    name = "ycloudctl",
    about = "ycloud operator tools (also usable as `kubectl ycloud` when installed as kubectl-ycloud)",
    version
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Classify the datapath flows of the service path as offloadable to tc/flower or not.
    ///
    /// Reads `ovs-appctl dpctl/dump-flows -m` and `ovs-ofctl -O OpenFlow15 dump-groups`,
    /// judges each flow against OVS 3.1's tc offload code (rules and sources: docs/offload.md).
    /// Exit 0: every service-path flow is eligible and no select group uses dp_hash; 1: not;
    /// 2: OVS not reachable or the dump could not be parsed.
    OffloadCheck {
        /// OVS run dir (where ovs-vswitchd.pid, its .ctl socket and BRIDGE.mgmt live).
        #[arg(long, value_name = "DIR", env = "OVS_RUNDIR")]
        ovs_rundir: Option<PathBuf>,
        /// The ovs-vswitchd unixctl socket (its directory is used as the run dir for ovs-ofctl).
        #[arg(long, value_name = "PATH")]
        vswitchd_ctl: Option<PathBuf>,
        /// Bridge whose OpenFlow groups are read.
        #[arg(long, default_value = "br-int")]
        bridge: String,
        /// Run ovs-appctl/ovs-ofctl inside this network namespace (e.g. a sandbox's node).
        #[arg(long, value_name = "NS")]
        netns: Option<String>,
        /// Judge every datapath flow, not only the service path.
        #[arg(long)]
        all: bool,
        /// Also list flows off the service path that are eligible.
        #[arg(long, short)]
        verbose: bool,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        /// Seconds the OVS tools may take.
        #[arg(long, default_value_t = 10)]
        timeout: u64,
        /// Read a saved `dpctl/dump-flows [-m]` output instead of asking OVS.
        #[arg(long, value_name = "FILE", requires = "groups_file")]
        flows_file: Option<PathBuf>,
        /// Read a saved `dump-groups` output (with --flows-file).
        #[arg(long, value_name = "FILE", requires = "flows_file")]
        groups_file: Option<PathBuf>,
    },
    /// List the OVN Northbound rows a service owns (external_ids `ycloud.io/kind=service`,
    /// `ycloud.io/name=NAMESPACE/NAME`), in every NB table that has `external_ids`.
    ///
    /// Exit 0: rows found; 1: the service owns no rows; 2: NB not reachable or bad input.
    NbRows {
        /// NB remote(s): `unix:PATH`, `tcp:IP:PORT`; comma-separated for a RAFT cluster.
        #[arg(long, value_name = "REMOTE", env = "OVN_NB_DB")]
        nb: String,
        /// The service as NAMESPACE/NAME.
        service: String,
        /// Print the rows as JSON (OVSDB wire values).
        #[arg(long)]
        json: bool,
        /// Seconds to wait for the NB connection and reply.
        #[arg(long, default_value_t = 10)]
        timeout: u64,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Cmd::NbRows {
            nb,
            service,
            json,
            timeout,
        } => match nb_rows::run(&nb, &service, json, Duration::from_secs(timeout)) {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::from(1),
            Err(e) => {
                eprintln!("ycloudctl nb-rows: {e}");
                ExitCode::from(2)
            }
        },
        Cmd::OffloadCheck {
            ovs_rundir,
            vswitchd_ctl,
            bridge,
            netns,
            all,
            verbose,
            json,
            timeout,
            flows_file,
            groups_file,
        } => {
            let source: Box<dyn OvsSource> = match (flows_file, groups_file) {
                (Some(f), Some(g)) => match saved(&f, &g) {
                    Ok(s) => Box::new(s),
                    Err(e) => {
                        eprintln!("ycloudctl offload-check: {e}");
                        return ExitCode::from(2);
                    }
                },
                _ => Box::new(OvsCtl {
                    rundir: ovs_rundir,
                    vswitchd_ctl,
                    bridge,
                    netns,
                    timeout: Duration::from_secs(timeout),
                }),
            };
            let scope = if all { Scope::All } else { Scope::ServicePath };
            let report = match offload::check(source.as_ref(), scope) {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("ycloudctl offload-check: {e}");
                    return ExitCode::from(2);
                }
            };
            if json {
                match serde_json::to_string_pretty(&report) {
                    Ok(s) => println!("{s}"),
                    Err(e) => {
                        eprintln!("ycloudctl offload-check: encoding the report: {e}");
                        return ExitCode::from(2);
                    }
                }
            } else {
                print!("{}", report.render(verbose));
            }
            if report.summary.ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
    }
}

fn saved(flows: &PathBuf, groups: &PathBuf) -> Result<SavedDumps, String> {
    let read = |p: &PathBuf| {
        std::fs::read_to_string(p).map_err(|e| format!("reading {}: {e}", p.display()))
    };
    Ok(SavedDumps {
        name: format!("{} + {}", flows.display(), groups.display()),
        flows: read(flows)?,
        groups: read(groups)?,
    })
}

/// `nb-rows`: one `select` per NB table with `external_ids`, all in one transaction.
mod nb_rows {
    use std::time::Duration;

    use serde_json::{Value, json};
    use ycloud_controller::compiler::names::{KIND_KEY, NAME_KEY, OwnerKind, ROLE_KEY};
    use ycloud_ovsdb::{Client, ClientConfig};

    const DB: &str = "OVN_Northbound";

    pub fn run(nb: &str, service: &str, json_out: bool, timeout: Duration) -> Result<bool, String> {
        match service.split_once('/') {
            Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {}
            _ => {
                return Err(format!(
                    "service {service:?}: expected NAMESPACE/NAME, e.g. demo/web"
                ));
            }
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("starting the runtime: {e}"))?;
        let rows = rt.block_on(async {
            tokio::time::timeout(timeout, select(nb, service, timeout))
                .await
                .map_err(|_| format!("NB {nb} did not answer within {timeout:?}"))?
        })?;
        if json_out {
            let v = Value::Array(
                rows.iter()
                    .map(|(t, r)| json!({"table": t, "row": r}))
                    .collect(),
            );
            println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        } else {
            for (table, row) in &rows {
                print_row(table, row);
            }
            println!(
                "{} NB row(s) owned by service {service} ({}={}, {}={service})",
                rows.len(),
                KIND_KEY,
                OwnerKind::Service.as_str(),
                NAME_KEY
            );
        }
        Ok(!rows.is_empty())
    }

    async fn select(
        nb: &str,
        service: &str,
        timeout: Duration,
    ) -> Result<Vec<(String, Value)>, String> {
        let mut config = ClientConfig::new(nb.split(',').map(str::to_owned).collect(), DB);
        config.request_timeout = timeout;
        let (client, _events) = Client::connect(config)
            .await
            .map_err(|e| format!("connecting to NB {nb}: {e}"))?;
        let schema = client
            .get_schema_json(DB)
            .await
            .map_err(|e| format!("reading the {DB} schema from {nb}: {e}"))?;
        let mut tables: Vec<String> = schema["tables"]
            .as_object()
            .map(|t| {
                t.iter()
                    .filter(|(_, def)| def["columns"].get("external_ids").is_some())
                    .map(|(name, _)| name.clone())
                    .collect()
            })
            .unwrap_or_default();
        tables.sort();
        let owner = json!([
            "map",
            [[KIND_KEY, OwnerKind::Service.as_str()], [NAME_KEY, service]]
        ]);
        let mut params = vec![json!(DB)];
        params.extend(tables.iter().map(
            |t| json!({"op": "select", "table": t, "where": [["external_ids", "includes", owner]]}),
        ));
        let reply = client
            .call("transact", Value::Array(params))
            .await
            .map_err(|e| format!("select on {nb}: {e}"))?;
        client.close();
        let results = reply
            .as_array()
            .ok_or_else(|| format!("unexpected transact reply: {reply}"))?;
        let mut rows = Vec::new();
        for (table, result) in tables.iter().zip(results) {
            if let Some(err) = result.get("error") {
                return Err(format!("select on {table}: {err} {}", result["details"]));
            }
            for row in result["rows"].as_array().into_iter().flatten() {
                rows.push((table.clone(), row.clone()));
            }
        }
        Ok(rows)
    }

    fn print_row(table: &str, row: &Value) {
        let uuid = row["_uuid"].get(1).and_then(Value::as_str).unwrap_or("?");
        let role = map_get(&row["external_ids"], ROLE_KEY).unwrap_or_default();
        let name = row.get("name").map(show).unwrap_or_default();
        println!("{table} {uuid} name={name} role={role}");
        let Some(cols) = row.as_object() else {
            return;
        };
        for (col, v) in cols {
            if matches!(col.as_str(), "_uuid" | "_version" | "name") {
                continue;
            }
            let text = show(v);
            if !matches!(text.as_str(), "" | "[]" | "{}") {
                println!("    {col}: {text}");
            }
        }
    }

    fn map_get(v: &Value, key: &str) -> Option<String> {
        v.get(1)?
            .as_array()?
            .iter()
            .find_map(|kv| (kv.get(0)?.as_str()? == key).then(|| show(&kv[1])))
    }

    /// OVSDB wire values as `ovn-nbctl list` shows them.
    fn show(v: &Value) -> String {
        match v {
            Value::String(s) => s.clone(),
            Value::Array(a) if a.len() == 2 && a[0] == "uuid" => show(&a[1]),
            Value::Array(a) if a.len() == 2 && a[0] == "set" => format!(
                "[{}]",
                a[1].as_array()
                    .map(|x| x.iter().map(show).collect::<Vec<_>>().join(", "))
                    .unwrap_or_default()
            ),
            Value::Array(a) if a.len() == 2 && a[0] == "map" => format!(
                "{{{}}}",
                a[1].as_array()
                    .map(|x| {
                        x.iter()
                            .map(|kv| format!("{}={}", show(&kv[0]), show(&kv[1])))
                            .collect::<Vec<_>>()
                            .join(", ")
                    })
                    .unwrap_or_default()
            ),
            other => other.to_string(),
        }
    }
}
