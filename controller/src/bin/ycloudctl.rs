//! `ycloudctl`: operator tools for ycloud (the logic is `ycloud_controller::ctl`). Also a
//! kubectl plugin: install it, or a symlink to it, as `kubectl-ycloud` on the PATH and run
//! `kubectl ycloud status`; the name it is called by is what its help shows.
//!
//! Exit codes: 0 = checked and fine, 1 = checked and not fine (a service not ready, no path,
//! a flow tc cannot offload, no rows), 2 = could not check (OVN unreachable, bad input).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use ycloud_controller::ctl::{self, CtlError};
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
    /// Services with their addresses, backends ready/total, readiness and scenarios.
    ///
    /// With --dir: reads the status files the controller writes in manifest mode. Without:
    /// lists the YusurServices of the Kubernetes API (--kubeconfig, else $KUBECONFIG,
    /// ~/.kube/config or the in-cluster service account) and shows their `.status`.
    /// Exit 0: every service is ready (and, from a directory, the controller synced); 1:
    /// not; 2: no status to read (no directory, API unreachable, CRDs not installed).
    Status {
        /// The controller's manifest directory (or its status directory).
        #[arg(long, value_name = "DIR", env = "YCLOUD_MANIFEST_DIR")]
        dir: Option<PathBuf>,
        /// The kubeconfig file to use (API mode).
        #[arg(long, value_name = "FILE", conflicts_with = "dir")]
        kubeconfig: Option<PathBuf>,
        /// The kubeconfig context to use (API mode; default: the current one).
        #[arg(long, value_name = "NAME", conflicts_with = "dir")]
        context: Option<String>,
        /// Only this namespace (API mode; default: all namespaces).
        #[arg(long, short = 'n', value_name = "NAMESPACE", conflicts_with = "dir")]
        namespace: Option<String>,
        /// Seconds the API server may take (API mode).
        #[arg(long, default_value_t = 10)]
        timeout: u64,
        /// Only this service (NAMESPACE/NAME).
        service: Option<String>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Trace a client packet to a service VIP with ovn-trace and say what happens to it.
    ///
    /// FROM: NAMESPACE/POD, an address of a logical port (pod, VNicIP, a node's management
    /// port), port:LSP_NAME, or outside[:SOURCE_IP] (beyond an EIP gateway). TO: VIP:PORT.
    /// Exit 0: the packet reaches a backend; 1: no path (the reason is printed); 2: error.
    Trace {
        from: String,
        to: String,
        /// NB remote(s): `unix:PATH`, `tcp:IP:PORT`; comma-separated for a RAFT cluster.
        #[arg(long, value_name = "REMOTE", env = "OVN_NB_DB")]
        nb: String,
        /// SB remote, as ovn-trace takes it.
        #[arg(long, value_name = "REMOTE", env = "OVN_SB_DB")]
        sb: String,
        /// UDP instead of TCP.
        #[arg(long)]
        udp: bool,
        /// Pin the load balancer's choice of backend (IP:PORT).
        #[arg(long, value_name = "IP:PORT")]
        backend: Option<String>,
        /// The ovn-trace program.
        #[arg(long, default_value = "ovn-trace")]
        ovn_trace: PathBuf,
        /// Print the raw ovn-trace output too.
        #[arg(long, short)]
        verbose: bool,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        /// Seconds NB and ovn-trace may take.
        #[arg(long, default_value_t = 10)]
        timeout: u64,
    },
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

/// `kubectl ycloud …` runs `kubectl-ycloud`: help and errors then name it the way the user
/// typed it.
fn invoked_name() -> &'static str {
    let arg0 = std::env::args_os().next().unwrap_or_default();
    let base = std::path::Path::new(&arg0)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("ycloudctl");
    if base.starts_with("kubectl-") {
        "kubectl ycloud"
    } else {
        "ycloudctl"
    }
}

fn main() -> ExitCode {
    let name = invoked_name();
    let matches = Cli::command().name(name).bin_name(name).get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(c) => c,
        Err(e) => e.exit(),
    };
    let (what, result) = match cli.command {
        Cmd::Status {
            dir,
            kubeconfig,
            context,
            namespace,
            timeout,
            service,
            json,
        } => (
            "status",
            status(
                StatusFrom {
                    dir,
                    kubeconfig,
                    context,
                    namespace,
                    timeout: Duration::from_secs(timeout),
                },
                service.as_deref(),
                json,
            ),
        ),
        Cmd::Trace {
            from,
            to,
            nb,
            sb,
            udp,
            backend,
            ovn_trace,
            verbose,
            json,
            timeout,
        } => (
            "trace",
            trace(
                ctl::trace::TraceRequest {
                    from,
                    to,
                    protocol: if udp {
                        ctl::trace::Protocol::Udp
                    } else {
                        ctl::trace::Protocol::Tcp
                    },
                    backend,
                    nb,
                    sb,
                    ovn_trace,
                    timeout: Duration::from_secs(timeout),
                },
                verbose,
                json,
            ),
        ),
        Cmd::NbRows {
            nb,
            service,
            json,
            timeout,
        } => (
            "nb-rows",
            nb_rows(&nb, &service, json, Duration::from_secs(timeout)),
        ),
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
                        eprintln!("{name} offload-check: {e}");
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
            (
                "offload-check",
                offload_check(source.as_ref(), all, verbose, json),
            )
        }
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("{name} {what}: {}", chain(&e));
            ExitCode::from(2)
        }
    }
}

/// An error with its causes, `a: b: c`.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(&format!(": {c}"));
        cur = c.source();
    }
    s
}

fn print_json(v: &impl serde::Serialize) -> Result<(), CtlError> {
    let s = serde_json::to_string_pretty(v)
        .map_err(|e| CtlError::Usage(format!("encoding the report: {e}")))?;
    println!("{s}");
    Ok(())
}

/// Where `status` reads: a status directory, or the API.
struct StatusFrom {
    dir: Option<PathBuf>,
    kubeconfig: Option<PathBuf>,
    context: Option<String>,
    namespace: Option<String>,
    timeout: Duration,
}

fn status(from: StatusFrom, service: Option<&str>, json: bool) -> Result<bool, CtlError> {
    if let Some(s) = service {
        ctl::nb_rows::check_service_name(s)?;
    }
    let report = match &from.dir {
        Some(dir) => ctl::status::read(dir, service)?,
        None => status_api(&from, service)?,
    };
    if json {
        print_json(&report)?;
    } else {
        print!("{}", ctl::status::render(&report));
    }
    Ok(report.all_ready())
}

#[cfg(feature = "kube")]
fn status_api(
    from: &StatusFrom,
    service: Option<&str>,
) -> Result<ctl::status::StatusReport, CtlError> {
    ctl::status_api::read_blocking(
        from.kubeconfig.as_deref(),
        from.context.as_deref(),
        &ctl::status_api::Query {
            namespace: from.namespace.clone(),
            service: service.map(str::to_owned),
        },
        from.timeout,
    )
}

#[cfg(not(feature = "kube"))]
fn status_api(
    from: &StatusFrom,
    _service: Option<&str>,
) -> Result<ctl::status::StatusReport, CtlError> {
    // Name the API flags that were given and cannot be honoured.
    let api_flags: Vec<&str> = [
        from.kubeconfig.as_ref().map(|_| "--kubeconfig"),
        from.context.as_ref().map(|_| "--context"),
        from.namespace.as_ref().map(|_| "--namespace"),
    ]
    .into_iter()
    .flatten()
    .collect();
    let ignored = if api_flags.is_empty() {
        String::new()
    } else {
        format!(" ({} need it)", api_flags.join(", "))
    };
    let _api_timeout = from.timeout;
    Err(CtlError::Usage(format!(
        "give --dir (or YCLOUD_MANIFEST_DIR): this ycloudctl was built without the `kube` feature, so it cannot read the API{ignored}"
    )))
}

fn trace(req: ctl::trace::TraceRequest, verbose: bool, json: bool) -> Result<bool, CtlError> {
    let report = ctl::trace::run(&req)?;
    if json {
        print_json(&report)?;
    } else {
        print!("{}", ctl::trace::render(&report, verbose));
    }
    Ok(report.has_path())
}

fn nb_rows(nb: &str, service: &str, json: bool, timeout: Duration) -> Result<bool, CtlError> {
    let rows = ctl::nb_rows::rows(nb, service, timeout)?;
    if json {
        print_json(&ctl::nb_rows::to_json(&rows))?;
    } else {
        print!("{}", ctl::nb_rows::render(service, &rows));
    }
    Ok(!rows.is_empty())
}

fn offload_check(
    source: &dyn OvsSource,
    all: bool,
    verbose: bool,
    json: bool,
) -> Result<bool, CtlError> {
    let scope = if all { Scope::All } else { Scope::ServicePath };
    let report = offload::check(source, scope).map_err(|e| CtlError::Usage(chain(&e)))?;
    if json {
        print_json(&report)?;
    } else {
        print!("{}", report.render(verbose));
    }
    Ok(report.summary.ok)
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
