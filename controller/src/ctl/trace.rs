//! `ycloudctl trace`: where a client's packet to a service goes, told in words.
//!
//! It reads NB (one snapshot transaction) to turn "this pod" or "outside" into a logical
//! port, its switch, its MAC and address and its router's MAC; builds the microflow of a TCP
//! (or UDP) SYN from there to the VIP; runs `ovn-trace` on the live SB with every connection
//! tracking step reporting `new`; and reads the trace: which load balancer (the NB row, its
//! service and role) picked which backend (DNAT), which SNAT happened, and where the packet
//! was delivered — or which stage dropped it and why.
//!
//! Two things `ovn-trace` (OVN 23.03) does not show and this derives from NB instead:
//! - the SNAT of `lb_force_snat_ip` (the service gateway): `ovn-trace` loses the
//!   `force_snat_for_lb` flag across `ct_lb_mark`, so its `lr_out_snat` never matches; when a
//!   load balancer action carries `force_snat`, the SNAT address is the router's
//!   `lb_force_snat_ip` (for `router_ip`, the address of the port the packet leaves by);
//! - which backend `ct_lb_mark` picked: it prints none; the port the packet is delivered to
//!   names it (`--backend` pins the choice, passed on as `--lb-dst`).

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{Value, json};

use super::{CtlError, block_on, connect_nb, map_get, map_items, refs, select, show, uuid_of};
use crate::compiler::names::{KIND_KEY, NAME_KEY, OwnerKind, ROLE_KEY};

/// The external id our pod ports carry (`namespace/name`).
const POD_KEY: &str = "ycloud.io/pod";

/// What to trace.
#[derive(Debug, Clone)]
pub struct TraceRequest {
    /// `NAMESPACE/POD`, an address of a logical port (a pod, a VNicIP, a node's management
    /// port), `port:LSP_NAME`, or `outside[:SOURCE_IP]` (a host beyond an EIP gateway's
    /// external network).
    pub from: String,
    /// `VIP:PORT` (`[V6]:PORT` for IPv6).
    pub to: String,
    pub protocol: Protocol,
    /// Pins the load balancer's choice (`IP:PORT`), else `ovn-trace` picks one at random.
    pub backend: Option<String>,
    pub nb: String,
    pub sb: String,
    /// The `ovn-trace` program.
    pub ovn_trace: PathBuf,
    pub timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

/// Where the packet starts.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Source {
    pub what: String,
    pub port: String,
    pub datapath: String,
    pub mac: String,
    pub ip: String,
    pub router_mac: String,
}

/// A load balancer that handled the packet.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LbStep {
    pub datapath: String,
    pub stage: String,
    /// The NB `Load_Balancer` row's name (`None` if no row matches the flow: not ours).
    pub name: Option<String>,
    /// The owning service (`namespace/name`) and the row's role, from its external ids.
    pub service: Option<String>,
    pub role: Option<String>,
    pub vip: String,
    pub backends: Vec<String>,
    pub force_snat: bool,
}

/// A source NAT on the way.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SnatStep {
    pub datapath: String,
    pub to: String,
    pub why: String,
}

/// Where the packet arrived.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Delivery {
    pub port: String,
    pub port_type: String,
    pub ip: Option<String>,
    pub pod: Option<String>,
    /// `ip:port` of the load balancer backend this is, if it is one.
    pub backend: Option<String>,
}

/// The answer.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TraceReport {
    pub from: Source,
    pub to: String,
    pub protocol: Protocol,
    /// Logical datapaths in the order the packet crossed them.
    pub path: Vec<String>,
    pub load_balancers: Vec<LbStep>,
    /// `VIP:PORT -> BACKEND`.
    pub dnat: Option<String>,
    pub snat: Vec<SnatStep>,
    pub delivered: Option<Delivery>,
    /// Why there is no path, when there is none.
    pub no_path: Option<String>,
    /// The address the backend sees as the source.
    pub source_seen: Option<String>,
    /// What ovn-trace noted, and what this had to derive.
    pub notes: Vec<String>,
    pub command: String,
    pub raw: String,
}

impl TraceReport {
    /// The packet reached a load balancer backend.
    pub fn has_path(&self) -> bool {
        self.delivered.as_ref().is_some_and(|d| d.backend.is_some())
    }
}

// ----------------------------------------------------------------------------------------
// parsing ovn-trace's detailed output

/// One thing the trace says.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// `ingress(dp="…", inport="…")` / `egress(dp="…", inport="…", outport="…")`.
    Pipeline {
        ingress: bool,
        datapath: String,
        outport: Option<String>,
    },
    /// `12. ls_in_lb (northd.c:7558): MATCH, priority 120, uuid …`.
    Stage {
        stage: String,
        matches: String,
        priority: u32,
    },
    /// `ct_lb_mark(backends=…; …)` or `ct_lb(backends=…)`.
    Lb {
        backends: Vec<String>,
        force_snat: bool,
    },
    /// `ct_snat_to_vip;` (the hairpin SNAT).
    HairpinSnat,
    /// `ct_snat(IP)`.
    Snat(String),
    /// `drop;`.
    Drop,
    /// `/* output to "PORT", type "TYPE" */`.
    Output { port: String, port_type: String },
    /// `*** …` notes of ovn-trace.
    Note(String),
}

fn quoted_after<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let start = line.find(key)? + key.len();
    let rest = &line[start..];
    let end = rest.find('"')?;
    Some(&rest[..end])
}

/// The events of a detailed `ovn-trace` output, in order. Lines it does not know are
/// skipped: the output is for people, and new OVN versions add to it.
pub fn parse(text: &str) -> Vec<Event> {
    let mut events = Vec::new();
    for raw in text.lines() {
        let line = raw.trim();
        if let Some(rest) = line.strip_prefix("***") {
            events.push(Event::Note(rest.trim().to_string()));
            continue;
        }
        let ingress = line.starts_with("ingress(dp=\"");
        if ingress || line.starts_with("egress(dp=\"") {
            events.push(Event::Pipeline {
                ingress,
                datapath: quoted_after(line, "dp=\"").unwrap_or_default().to_string(),
                outport: quoted_after(line, "outport=\"").map(str::to_string),
            });
            continue;
        }
        // a stage line: "<table>. <stage> (<source>): <match>, priority <p>, uuid <u>"
        if let Some((num, rest)) = line.split_once(". ")
            && !num.is_empty()
            && num.chars().all(|c| c.is_ascii_digit())
            && let Some((stage, after)) = rest.split_once(" (")
            && let Some((_, m)) = after.split_once("): ")
            && let Some((matches, prio)) = m.rsplit_once(", priority ")
        {
            let priority = prio
                .split(',')
                .next()
                .and_then(|p| p.trim().parse().ok())
                .unwrap_or(0);
            events.push(Event::Stage {
                stage: stage.to_string(),
                matches: matches.to_string(),
                priority,
            });
            continue;
        }
        if let Some(rest) = line
            .strip_prefix("ct_lb_mark(backends=")
            .or_else(|| line.strip_prefix("ct_lb(backends="))
        {
            let body = rest.trim_end_matches(';').trim_end_matches(')');
            let mut parts = body.split(';').map(str::trim);
            let backends = parts
                .next()
                .unwrap_or_default()
                .split(',')
                .filter(|b| !b.is_empty())
                .map(str::to_string)
                .collect();
            let force_snat = parts.any(|p| p == "force_snat");
            events.push(Event::Lb {
                backends,
                force_snat,
            });
            continue;
        }
        if line.starts_with("ct_snat_to_vip") {
            events.push(Event::HairpinSnat);
            continue;
        }
        if let Some(rest) = line.strip_prefix("ct_snat(") {
            let ip = rest.split([')', ',']).next().unwrap_or_default();
            events.push(Event::Snat(ip.to_string()));
            continue;
        }
        if line == "drop;" {
            events.push(Event::Drop);
            continue;
        }
        if let Some(rest) = line.strip_prefix("/* output to \"") {
            let port = rest.split('"').next().unwrap_or_default().to_string();
            let port_type = quoted_after(rest, "type \"")
                .unwrap_or_default()
                .to_string();
            events.push(Event::Output { port, port_type });
        }
    }
    events
}

// ----------------------------------------------------------------------------------------
// NB snapshot

/// The NB rows a trace needs, read in one transaction.
#[derive(Debug, Clone, Default)]
pub struct NbSnapshot {
    pub switch_ports: Vec<Value>,
    pub switches: Vec<Value>,
    pub router_ports: Vec<Value>,
    pub routers: Vec<Value>,
    pub lb_groups: Vec<Value>,
    pub lbs: Vec<Value>,
}

impl NbSnapshot {
    pub fn read(nb: &str, timeout: Duration) -> Result<NbSnapshot, CtlError> {
        block_on(nb, timeout, async {
            let client = connect_nb(nb, timeout).await?;
            let tables = [
                "Logical_Switch_Port",
                "Logical_Switch",
                "Logical_Router_Port",
                "Logical_Router",
                "Load_Balancer_Group",
                "Load_Balancer",
            ];
            let selects: Vec<(&str, Value)> = tables.iter().map(|t| (*t, json!([]))).collect();
            let rows = select(&client, nb, &selects).await;
            client.close();
            let mut it = rows?.into_iter();
            let mut next = || it.next().unwrap_or_default();
            Ok(NbSnapshot {
                switch_ports: next(),
                switches: next(),
                router_ports: next(),
                routers: next(),
                lb_groups: next(),
                lbs: next(),
            })
        })
    }

    fn by_name<'a>(rows: &'a [Value], name: &str) -> Option<&'a Value> {
        rows.iter().find(|r| r["name"] == name)
    }

    fn by_uuid<'a>(rows: &'a [Value], uuid: &str) -> Option<&'a Value> {
        rows.iter().find(|r| uuid_of(r) == uuid)
    }

    fn switch_of(&self, lsp: &Value) -> Option<&Value> {
        let id = uuid_of(lsp);
        self.switches
            .iter()
            .find(|ls| refs(&ls["ports"]).contains(&id))
    }

    /// The load balancer uuids applied to a switch or router, directly or by group.
    fn lbs_of_datapath(&self, dp: &str) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        let row = Self::by_name(&self.switches, dp).or_else(|| Self::by_name(&self.routers, dp));
        if let Some(row) = row {
            out.extend(refs(&row["load_balancer"]));
            for g in refs(&row["load_balancer_group"]) {
                if let Some(g) = Self::by_uuid(&self.lb_groups, &g) {
                    out.extend(refs(&g["load_balancer"]));
                }
            }
        }
        out
    }

    /// The LSP whose addresses hold `ip`, and the first address word (its MAC).
    fn port_with_ip(&self, ip: &str) -> Option<&Value> {
        self.switch_ports.iter().find(|p| {
            let kind = show(&p["type"]);
            (kind.is_empty() || kind == "virtual")
                && lsp_addresses(p)
                    .iter()
                    .any(|a| a.split_whitespace().skip(1).any(|w| w == ip))
        })
    }

    /// The MAC of the router port behind a switch (the one whose network holds `ip`, else
    /// the first).
    fn router_mac(&self, ls: &Value, ip: Option<IpAddr>) -> Option<String> {
        let mut first = None;
        for id in refs(&ls["ports"]) {
            let Some(p) = Self::by_uuid(&self.switch_ports, &id) else {
                continue;
            };
            if show(&p["type"]) != "router" {
                continue;
            }
            let Some(lrp_name) = map_get(&p["options"], "router-port") else {
                continue;
            };
            let Some(lrp) = Self::by_name(&self.router_ports, &lrp_name) else {
                continue;
            };
            let mac = show(&lrp["mac"]);
            if let Some(ip) = ip
                && networks(lrp).iter().any(|n| net_contains(n, ip))
            {
                return Some(mac);
            }
            first.get_or_insert(mac);
        }
        first
    }
}

fn lsp_addresses(p: &Value) -> Vec<String> {
    super::set_items(&p["addresses"]).iter().map(show).collect()
}

fn networks(lrp: &Value) -> Vec<String> {
    super::set_items(&lrp["networks"])
        .iter()
        .map(show)
        .collect()
}

fn net_contains(net: &str, ip: IpAddr) -> bool {
    net.parse::<ipnet::IpNet>()
        .map(|n| n.trunc().contains(&ip))
        .unwrap_or(false)
}

/// `IP` of `IP:PORT` / `[IP]:PORT`.
fn split_ip_port(s: &str) -> Option<(IpAddr, u16)> {
    let sa: std::net::SocketAddr = s.parse().ok()?;
    Some((sa.ip(), sa.port()))
}

// ----------------------------------------------------------------------------------------
// the trace

/// Resolves the source against NB.
pub fn resolve_source(nb: &NbSnapshot, from: &str, vip: IpAddr) -> Result<Source, CtlError> {
    if from == "outside" || from.starts_with("outside:") {
        let src = from.strip_prefix("outside:").unwrap_or("198.51.100.10");
        let src_ip: IpAddr = src
            .parse()
            .map_err(|_| CtlError::Usage(format!("outside:{src}: {src:?} is not an IP address")))?;
        // the localnet port of an external network (an EIP gateway's)
        let mut candidates = nb
            .switch_ports
            .iter()
            .filter(|p| show(&p["type"]) == "localnet")
            .filter_map(|p| Some((p, nb.switch_of(p)?)));
        let (p, ls) = candidates.next().ok_or_else(|| {
            CtlError::NotFound(
                "outside: NB has no localnet port (no EIP gateway with an external network)".into(),
            )
        })?;
        let router_mac = nb.router_mac(ls, Some(vip)).ok_or_else(|| {
            CtlError::NotFound(format!(
                "outside: the external switch {} has no router port",
                show(&ls["name"])
            ))
        })?;
        return Ok(Source {
            what: format!("a host outside ({src_ip}) beyond {}", show(&p["name"])),
            port: show(&p["name"]),
            datapath: show(&ls["name"]),
            mac: "02:00:00:00:00:01".into(),
            ip: src_ip.to_string(),
            router_mac,
        });
    }
    let (port, what) = if let Some(name) = from.strip_prefix("port:") {
        let p = NbSnapshot::by_name(&nb.switch_ports, name).ok_or_else(|| {
            CtlError::NotFound(format!("port {name}: no such logical switch port in NB"))
        })?;
        (p, format!("port {name}"))
    } else if let Ok(ip) = from.parse::<IpAddr>() {
        let p = nb.port_with_ip(&ip.to_string()).ok_or_else(|| {
            CtlError::NotFound(format!(
                "{ip}: no logical switch port in NB has this address (a pod, VNicIP or management port address)"
            ))
        })?;
        (p, format!("{ip} (port {})", show(&p["name"])))
    } else if from.contains('/') {
        let p = nb
            .switch_ports
            .iter()
            .find(|p| map_get(&p["external_ids"], POD_KEY).as_deref() == Some(from))
            .ok_or_else(|| {
                CtlError::NotFound(format!(
                    "pod {from}: no logical switch port in NB carries {POD_KEY}={from} (unknown pod, or not programmed yet)"
                ))
            })?;
        (p, format!("pod {from}"))
    } else {
        return Err(CtlError::Usage(format!(
            "from {from:?}: expected NAMESPACE/POD, an IP address, port:NAME or outside[:IP]"
        )));
    };
    let addr = lsp_addresses(port)
        .into_iter()
        .find(|a| a.split_whitespace().nth(1).is_some())
        .ok_or_else(|| {
            CtlError::NotFound(format!(
                "port {}: no MAC and IP in its addresses",
                show(&port["name"])
            ))
        })?;
    let mut words = addr.split_whitespace();
    let mac = words.next().unwrap_or_default().to_string();
    let ip = words
        .find(|w| {
            w.parse::<IpAddr>()
                .is_ok_and(|a| a.is_ipv4() == vip.is_ipv4())
        })
        .ok_or_else(|| {
            CtlError::NotFound(format!(
                "port {}: no {} address to send from",
                show(&port["name"]),
                if vip.is_ipv4() { "IPv4" } else { "IPv6" }
            ))
        })?
        .to_string();
    let ls = nb.switch_of(port).ok_or_else(|| {
        CtlError::NotFound(format!(
            "port {}: on no logical switch",
            show(&port["name"])
        ))
    })?;
    let router_mac = nb.router_mac(ls, ip.parse().ok()).ok_or_else(|| {
        CtlError::NotFound(format!(
            "switch {}: no router port, so nothing routes to a VIP",
            show(&ls["name"])
        ))
    })?;
    Ok(Source {
        what,
        port: show(&port["name"]),
        datapath: show(&ls["name"]),
        mac,
        ip,
        router_mac,
    })
}

/// The `ovn-trace` microflow of a SYN from `src` to `vip:port`.
pub fn microflow(src: &Source, vip: IpAddr, port: u16, proto: Protocol) -> String {
    let v = if vip.is_ipv4() { "ip4" } else { "ip6" };
    let p = proto.as_str();
    let mut flow = format!(
        "inport == \"{}\" && eth.src == {} && eth.dst == {} && {v}.src == {} && {v}.dst == {vip} && ip.ttl == 64 && {p} && {p}.src == 33333 && {p}.dst == {port}",
        src.port, src.mac, src.router_mac, src.ip
    );
    if proto == Protocol::Tcp {
        flow.push_str(" && tcp.flags == 2");
    }
    flow
}

/// Runs the trace.
pub fn run(req: &TraceRequest) -> Result<TraceReport, CtlError> {
    let (vip, port) = split_ip_port(&req.to).ok_or_else(|| {
        CtlError::Usage(format!(
            "to {:?}: expected VIP:PORT, e.g. 10.96.0.100:80 ([fd00::1]:80 for IPv6)",
            req.to
        ))
    })?;
    if let Some(b) = &req.backend
        && split_ip_port(b).is_none()
    {
        return Err(CtlError::Usage(format!(
            "--backend {b:?}: expected IP:PORT"
        )));
    }
    let nb = NbSnapshot::read(&req.nb, req.timeout)?;
    let src = resolve_source(&nb, &req.from, vip)?;
    let flow = microflow(&src, vip, port, req.protocol);
    let mut args = vec![format!("--db={}", req.sb)];
    if let Some(b) = &req.backend {
        args.push(format!("--lb-dst={b}"));
    }
    // every connection-tracking step of the SYN's first pass sees a new connection
    args.extend(std::iter::repeat_n("--ct=new".to_string(), 12));
    args.push(src.datapath.clone());
    args.push(flow);
    let command = format!(
        "{} {}",
        req.ovn_trace.display(),
        args.iter()
            .map(|a| if a.contains(' ') {
                format!("'{a}'")
            } else {
                a.clone()
            })
            .collect::<Vec<_>>()
            .join(" ")
    );
    let raw = run_tool(&req.ovn_trace, &args, &command, req.timeout)?;
    Ok(explain(
        &nb,
        src,
        vip,
        port,
        req.protocol,
        req.backend.as_deref(),
        command,
        raw,
    ))
}

fn run_tool(
    program: &PathBuf,
    args: &[String],
    command: &str,
    timeout: Duration,
) -> Result<String, CtlError> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| CtlError::Spawn {
            command: command.to_string(),
            source,
        })?;
    // stdout is read on a thread so a long trace cannot fill the pipe and stall the tool
    let mut stdout = child.stdout.take().expect("piped stdout");
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut stdout, &mut s);
        s
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break st,
            Ok(None) if Instant::now() > deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(CtlError::ToolTimeout {
                    command: command.to_string(),
                    timeout,
                });
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(source) => {
                return Err(CtlError::Spawn {
                    command: command.to_string(),
                    source,
                });
            }
        }
    };
    let out = reader.join().unwrap_or_default();
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut e, &mut stderr);
    }
    if !status.success() {
        return Err(CtlError::Tool {
            command: command.to_string(),
            status: status.to_string(),
            stderr: stderr.trim().to_string(),
        });
    }
    Ok(out)
}

/// The VIP key a stage match tests (`ip4.dst == A && tcp.dst == P`), as `A:P`.
fn vip_of_match(m: &str) -> Option<String> {
    let after = |key: &str| {
        m.split(key).nth(1).map(|r| {
            r.split([' ', ')', '&'])
                .next()
                .unwrap_or_default()
                .to_string()
        })
    };
    let port = after("tcp.dst == ")
        .or_else(|| after("udp.dst == "))
        .or_else(|| after("sctp.dst == "))?;
    if let Some(ip) = after("ip4.dst == ") {
        return Some(format!("{ip}:{port}"));
    }
    after("ip6.dst == ").map(|ip| format!("[{ip}]:{port}"))
}

/// Turns the trace events into the report.
#[allow(clippy::too_many_arguments)]
pub fn explain(
    nb: &NbSnapshot,
    from: Source,
    vip: IpAddr,
    port: u16,
    protocol: Protocol,
    pinned: Option<&str>,
    command: String,
    raw: String,
) -> TraceReport {
    let events = parse(&raw);
    let to = match vip {
        IpAddr::V4(_) => format!("{vip}:{port}"),
        IpAddr::V6(_) => format!("[{vip}]:{port}"),
    };
    let mut path: Vec<String> = Vec::new();
    let mut lbs: Vec<LbStep> = Vec::new();
    let mut snat = Vec::new();
    let mut notes = Vec::new();
    let mut dp = String::new();
    let mut stage = (String::new(), String::new(), 0u32);
    let mut last_drop: Option<(String, (String, String, u32))> = None;
    let mut last_output: Option<(String, String)> = None;
    let mut pending_force_snat: Option<String> = None;
    let mut aff_backend: Option<(String, String)> = None;
    for ev in events {
        match ev {
            Event::Pipeline {
                ingress,
                datapath,
                outport,
            } => {
                if path.last() != Some(&datapath) {
                    path.push(datapath.clone());
                }
                if !ingress
                    && let Some(out) = outport
                    && pending_force_snat.as_deref() == Some(datapath.as_str())
                {
                    pending_force_snat = None;
                    if let Some(step) = force_snat_step(nb, &datapath, &out) {
                        snat.push(step);
                    }
                }
                dp = datapath;
            }
            Event::Stage {
                stage: s,
                matches,
                priority,
            } => {
                // the learn stage names the backend the load balancer chose
                if s.ends_with("_lb_aff_learn") {
                    aff_backend = vip_of_match(&matches).map(|b| (dp.clone(), b));
                }
                stage = (s, matches, priority);
            }
            Event::Lb {
                backends,
                force_snat,
            } => {
                let key = vip_of_match(&stage.1).unwrap_or_else(|| to.clone());
                let want: BTreeSet<&str> = backends.iter().map(String::as_str).collect();
                let attached = nb.lbs_of_datapath(&dp);
                let candidates: Vec<&Value> = nb
                    .lbs
                    .iter()
                    .filter(|lb| {
                        map_items(&lb["vips"]).iter().any(|(k, v)| {
                            *k == key && v.split(',').collect::<BTreeSet<_>>() == want
                        })
                    })
                    .collect();
                let row = candidates
                    .iter()
                    .find(|lb| attached.contains(&uuid_of(lb)))
                    .or(candidates.first());
                let service = row.and_then(|lb| {
                    (map_get(&lb["external_ids"], KIND_KEY).as_deref()
                        == Some(OwnerKind::Service.as_str()))
                    .then(|| map_get(&lb["external_ids"], NAME_KEY))
                    .flatten()
                });
                if force_snat {
                    pending_force_snat = Some(dp.clone());
                }
                lbs.push(LbStep {
                    datapath: dp.clone(),
                    stage: stage.0.clone(),
                    name: row.map(|lb| show(&lb["name"])),
                    service,
                    role: row.and_then(|lb| map_get(&lb["external_ids"], ROLE_KEY)),
                    vip: key,
                    backends,
                    force_snat,
                });
            }
            Event::HairpinSnat => {
                let lb = lbs.last();
                let ip = lb
                    .and_then(|l| {
                        let row = l
                            .name
                            .as_ref()
                            .and_then(|n| NbSnapshot::by_name(&nb.lbs, n))?;
                        map_get(&row["options"], "hairpin_snat_ip")
                    })
                    .or_else(|| {
                        lb.and_then(|l| split_ip_port(&l.vip))
                            .map(|(ip, _)| ip.to_string())
                    })
                    .unwrap_or_else(|| vip.to_string());
                snat.push(SnatStep {
                    datapath: dp.clone(),
                    to: ip.split_whitespace().next().unwrap_or_default().to_string(),
                    why: "hairpin: the client is the backend it reached, so its own request comes back from the VIP (hairpin_snat_ip)".into(),
                });
            }
            Event::Snat(ip) => snat.push(SnatStep {
                datapath: dp.clone(),
                to: ip,
                why: format!("{} (priority {}): {}", stage.0, stage.2, stage.1),
            }),
            Event::Drop => last_drop = Some((dp.clone(), stage.clone())),
            Event::Output { port, port_type } => last_output = Some((port, port_type)),
            Event::Note(n) => notes.push(n),
        }
    }
    // `--lb-dst` makes ovn-trace DNAT at the pre-stateful stage already, so the load
    // balancer stage never matches: name the row from NB instead
    if lbs.is_empty()
        && let Some(pin) = pinned
    {
        let attached = nb.lbs_of_datapath(&from.datapath);
        if let Some(lb) = nb.lbs.iter().find(|lb| {
            attached.contains(&uuid_of(lb))
                && map_items(&lb["vips"])
                    .iter()
                    .any(|(k, v)| *k == to && v.split(',').any(|b| b == pin))
        }) {
            let backends = map_items(&lb["vips"])
                .into_iter()
                .find(|(k, _)| *k == to)
                .map(|(_, v)| v.split(',').map(str::to_string).collect())
                .unwrap_or_default();
            lbs.push(LbStep {
                datapath: from.datapath.clone(),
                stage: "ls_in_pre_stateful (--lb-dst pinned the backend)".into(),
                name: Some(show(&lb["name"])),
                service: map_get(&lb["external_ids"], NAME_KEY),
                role: map_get(&lb["external_ids"], ROLE_KEY),
                vip: to.clone(),
                backends,
                force_snat: false,
            });
        }
    }
    // OVN 23.03's ovn-trace stops at `commit_lb_aff` (session affinity): the learn stage
    // named the backend; the rest of the way is that of any packet to it
    if let Some((dp, b)) = &aff_backend
        && last_output.is_none()
        && let Some((ip, _)) = split_ip_port(b)
        && let Some(p) = nb.port_with_ip(&ip.to_string())
    {
        notes.push(format!(
            "ovn-trace stops at the session-affinity learn action in {dp}; the load balancer chose {b}"
        ));
        last_output = Some((show(&p["name"]), String::new()));
    }
    let backends: BTreeSet<&str> = lbs
        .iter()
        .flat_map(|l| l.backends.iter().map(String::as_str))
        .collect();
    let delivered = last_output
        .filter(|(_, t)| t.is_empty() || t == "localnet" || t == "virtual")
        .map(|(port, port_type)| {
            let row = NbSnapshot::by_name(&nb.switch_ports, &port);
            let ips: Vec<String> = row
                .map(|p| {
                    lsp_addresses(p)
                        .iter()
                        .flat_map(|a| {
                            a.split_whitespace()
                                .skip(1)
                                .map(str::to_string)
                                .collect::<Vec<_>>()
                        })
                        .collect()
                })
                .unwrap_or_default();
            let backend = backends
                .iter()
                .find(|b| {
                    split_ip_port(b).is_some_and(|(ip, _)| ips.contains(&ip.to_string()))
                        && pinned.is_none_or(|p| p == **b)
                })
                .map(|b| b.to_string());
            Delivery {
                ip: backend
                    .as_deref()
                    .and_then(split_ip_port)
                    .map(|(ip, _)| ip.to_string())
                    .or_else(|| ips.first().cloned()),
                pod: row.and_then(|p| map_get(&p["external_ids"], POD_KEY)),
                port,
                port_type,
                backend,
            }
        });
    let reached_backend = delivered.as_ref().is_some_and(|d| d.backend.is_some());
    let no_path = if reached_backend {
        None
    } else if let Some((dp, (stage, m, prio))) = &last_drop {
        let why = if stage == "lr_in_ip_routing" {
            format!("no route to {vip} in router {dp}")
        } else if stage.contains("acl") {
            format!("an ACL of {dp} drops it")
        } else {
            format!("{dp} drops it")
        };
        Some(format!(
            "{why} (stage {stage}, priority {prio}, match `{m}`)"
        ))
    } else if let Some(d) = &delivered {
        Some(format!(
            "delivered to port {} ({}), which is not a backend of any load balancer on the way",
            d.port,
            d.ip.as_deref().unwrap_or("no address")
        ))
    } else if lbs.is_empty() {
        Some(format!(
            "no load balancer on the way has {to}, and the packet reaches no port{}",
            if notes.is_empty() {
                String::new()
            } else {
                format!(" ({})", notes.join("; "))
            }
        ))
    } else {
        Some(format!(
            "the trace ends in {} without delivering the packet{}",
            path.last().map(String::as_str).unwrap_or("?"),
            if notes.is_empty() {
                String::new()
            } else {
                format!(" ({})", notes.join("; "))
            }
        ))
    };
    let dnat = delivered
        .as_ref()
        .and_then(|d| d.backend.as_ref())
        .map(|b| format!("{to} -> {b}"));
    let source_seen = reached_backend.then(|| {
        snat.last()
            .map(|s| s.to.clone())
            .unwrap_or_else(|| from.ip.clone())
    });
    TraceReport {
        from,
        to,
        protocol,
        path,
        load_balancers: lbs,
        dnat,
        snat,
        delivered,
        no_path,
        source_seen,
        notes,
        command,
        raw,
    }
}

/// The SNAT of a router's `lb_force_snat_ip` when a packet leaves by `outport`.
fn force_snat_step(nb: &NbSnapshot, router: &str, outport: &str) -> Option<SnatStep> {
    let lr = NbSnapshot::by_name(&nb.routers, router)?;
    let opt = map_get(&lr["options"], "lb_force_snat_ip")?;
    let (ip, why) = if opt == "router_ip" {
        let lrp = NbSnapshot::by_name(&nb.router_ports, outport)?;
        let ip = networks(lrp).first()?.split('/').next()?.to_string();
        (
            ip,
            format!(
                "lb_force_snat_ip=router_ip of {router}: the address of {outport}, the port it leaves by"
            ),
        )
    } else {
        (
            opt.split_whitespace().next()?.to_string(),
            format!("lb_force_snat_ip={opt} of {router}"),
        )
    };
    Some(SnatStep {
        datapath: router.to_string(),
        to: ip,
        why,
    })
}

/// The report in words.
pub fn render(r: &TraceReport, verbose: bool) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "from   {}: port {} on {}, {} ({})",
        r.from.what, r.from.port, r.from.datapath, r.from.ip, r.from.mac
    );
    let _ = writeln!(out, "to     {}/{}", r.to, r.protocol.as_str());
    let _ = writeln!(out, "path   {}", r.path.join(" -> "));
    for lb in &r.load_balancers {
        let who = match (&lb.name, &lb.service, &lb.role) {
            (Some(n), Some(s), Some(role)) => format!("{n} (service {s}, role {role})"),
            (Some(n), _, _) => format!("{n} (not a ycloud service's)"),
            _ => "a load balancer with no matching NB row".to_string(),
        };
        let _ = writeln!(
            out,
            "lb     {who} on {} ({}): {} -> one of {}{}",
            lb.datapath,
            lb.stage,
            lb.vip,
            lb.backends.join(", "),
            if lb.force_snat { "; force SNAT" } else { "" }
        );
    }
    if let Some(d) = &r.dnat {
        let _ = writeln!(out, "DNAT   {d}");
    }
    for s in &r.snat {
        let _ = writeln!(
            out,
            "SNAT   source -> {} on {}: {}",
            s.to, s.datapath, s.why
        );
    }
    match (&r.delivered, &r.no_path) {
        (Some(d), None) => {
            let _ = writeln!(
                out,
                "result delivered to port {}{} at {}; the backend sees source {}",
                d.port,
                d.pod
                    .as_ref()
                    .map(|p| format!(" (pod {p})"))
                    .unwrap_or_default(),
                d.backend.as_deref().unwrap_or("?"),
                r.source_seen.as_deref().unwrap_or("?")
            );
        }
        (_, Some(why)) => {
            let _ = writeln!(out, "result NO PATH: {why}");
        }
        (None, None) => {
            let _ = writeln!(out, "result unknown");
        }
    }
    for n in &r.notes {
        let _ = writeln!(out, "note   {n}");
    }
    if verbose {
        let _ = writeln!(out, "\n$ {}\n{}", r.command, r.raw);
    } else if r.load_balancers.len() == 1
        && r.load_balancers[0].backends.len() > 1
        && !r.command.contains("--lb-dst")
    {
        let _ = writeln!(
            out,
            "note   ovn-trace picks one backend at random; --backend IP:PORT pins it (-v shows the raw trace)"
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SVCGW: &str = include_str!("../../tests/fixtures/trace/svcgw.txt");
    const NOT_ALLOWED: &str = include_str!("../../tests/fixtures/trace/not-allowed.txt");
    const HAIRPIN: &str = include_str!("../../tests/fixtures/trace/hairpin.txt");
    const EIP: &str = include_str!("../../tests/fixtures/trace/eip.txt");

    #[test]
    fn a_service_gateway_trace_shows_its_load_balancer_with_force_snat_and_the_delivery() {
        let ev = parse(SVCGW);
        assert!(ev.contains(&Event::Lb {
            backends: vec![
                "10.0.1.3:8080".into(),
                "10.0.1.4:8080".into(),
                "10.0.1.5:8080".into()
            ],
            force_snat: true
        }));
        assert!(ev.contains(&Event::Pipeline {
            ingress: false,
            datapath: "yc-svcgw".into(),
            outport: Some("yc-svcgw-tenant-a".into())
        }));
        assert_eq!(
            ev.iter().rev().find_map(|e| match e {
                Event::Output { port, port_type } => Some((port.as_str(), port_type.as_str())),
                _ => None,
            }),
            Some(("shop.web-1", ""))
        );
    }

    #[test]
    fn a_trace_that_dies_in_routing_ends_with_a_drop_after_the_routing_stage() {
        let ev = parse(NOT_ALLOWED);
        let n = ev.len();
        assert_eq!(ev[n - 1], Event::Drop);
        assert!(
            matches!(&ev[n - 2], Event::Stage { stage, priority: 0, .. } if stage == "lr_in_ip_routing")
        );
    }

    #[test]
    fn a_pinned_hairpin_trace_shows_the_snat_to_the_vip() {
        let ev = parse(HAIRPIN);
        assert!(ev.contains(&Event::HairpinSnat));
    }

    #[test]
    fn the_lb_stage_match_names_the_vip() {
        let ev = parse(EIP);
        let m = ev
            .iter()
            .find_map(|e| match e {
                Event::Stage { stage, matches, .. } if stage == "lr_in_dnat" => {
                    Some(matches.clone())
                }
                _ => None,
            })
            .unwrap();
        assert_eq!(vip_of_match(&m).as_deref(), Some("200.0.0.100:80"));
    }

    #[test]
    fn the_microflow_is_a_syn_from_the_port_to_the_vip() {
        let src = Source {
            what: "pod shop/client-a".into(),
            port: "shop.client-a".into(),
            datapath: "yc-subnet-a-web".into(),
            mac: "0a:58:0a:00:01:02".into(),
            ip: "10.0.1.2".into(),
            router_mac: "0a:58:0a:00:01:01".into(),
        };
        let f = microflow(&src, "10.96.0.100".parse().unwrap(), 80, Protocol::Tcp);
        assert_eq!(
            f,
            "inport == \"shop.client-a\" && eth.src == 0a:58:0a:00:01:02 && eth.dst == 0a:58:0a:00:01:01 && ip4.src == 10.0.1.2 && ip4.dst == 10.96.0.100 && ip.ttl == 64 && tcp && tcp.src == 33333 && tcp.dst == 80 && tcp.flags == 2"
        );
    }
}
