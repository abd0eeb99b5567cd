//! The offload checker: can the datapath flows of ycloud's service path go to tc/flower?
//!
//! Data flow: [`OvsSource`] (runs `ovs-appctl dpctl/dump-flows -m` and `ovs-ofctl
//! dump-groups`, or reads saved dumps) → [`dpflow::parse_dump`] / [`groups::parse_groups`]
//! (text → flows and groups) → [`path::service_path`] (which flows carry service packets) →
//! [`rules::classify`] (each flow against OVS 3.1's tc offload code, every rule citing its
//! source) → [`Report`] (table or JSON; `ycloudctl offload-check` prints it).
//!
//! This can only say what OVS *would accept* for tc: whether a NIC then takes a flow into
//! hardware is decided by its driver (docs/offload.md, "What cannot be proven here").

pub mod dpflow;
pub mod groups;
pub mod path;
pub mod rules;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use serde::Serialize;

use self::dpflow::DpFlow;
use self::groups::Group;
use self::path::Role;
use self::rules::{Finding, Verdict};

/// Everything the checker can fail on.
#[derive(Debug, thiserror::Error)]
pub enum OffloadError {
    #[error("{source_name}, line {line}: {reason}: {text:?}")]
    Parse {
        source_name: String,
        line: usize,
        reason: String,
        text: String,
    },
    #[error("could not run `{command}` (is Open vSwitch installed?)")]
    Spawn {
        command: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{command}` failed ({status}): {stderr}; is ovs-vswitchd running, and is {hint}?")]
    Failed {
        command: String,
        status: String,
        stderr: String,
        hint: String,
    },
}

/// Where the dumps come from: OVS itself, or saved text (tests, `--flows-file`).
pub trait OvsSource {
    /// `ovs-appctl dpctl/dump-flows -m`.
    fn dump_flows(&self) -> Result<String, OffloadError>;
    /// `ovs-ofctl -O OpenFlow15 dump-groups BRIDGE`.
    fn dump_groups(&self) -> Result<String, OffloadError>;
    /// Names the source in reports and parse errors.
    fn describe(&self) -> String;
}

/// A running ovs-vswitchd, reached through its unixctl socket and bridge mgmt socket.
#[derive(Debug, Clone)]
pub struct OvsCtl {
    /// OVS run dir (holds `ovs-vswitchd.pid`, `ovs-vswitchd.PID.ctl`, `BRIDGE.mgmt`); `None`:
    /// the tools' default (`OVS_RUNDIR` or /var/run/openvswitch).
    pub rundir: Option<PathBuf>,
    /// The vswitchd unixctl socket, when given instead of (or besides) the run dir.
    pub vswitchd_ctl: Option<PathBuf>,
    pub bridge: String,
    /// Run the tools inside this network namespace (`ip netns exec NS …`).
    pub netns: Option<String>,
    /// Passed to the tools' own `--timeout`, so an unreachable OVS cannot hang us.
    pub timeout: Duration,
}

impl OvsCtl {
    fn run(&self, program: &str, args: &[String]) -> Result<String, OffloadError> {
        let mut argv: Vec<String> = Vec::new();
        if let Some(ns) = &self.netns {
            argv.extend(["ip", "netns", "exec", ns].map(String::from));
        }
        argv.push(program.to_owned());
        argv.extend(args.iter().cloned());
        let command = argv.join(" ");
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..]);
        // ovs-ofctl finds `BRIDGE.mgmt` only through the run dir; a ctl socket path tells us
        // the run dir too (the socket lives in it)
        let rundir = self.rundir.clone().or_else(|| {
            self.vswitchd_ctl
                .as_ref()
                .and_then(|p| p.parent().map(PathBuf::from))
        });
        if let Some(dir) = &rundir {
            cmd.env("OVS_RUNDIR", dir);
        }
        let out = cmd.output().map_err(|source| OffloadError::Spawn {
            command: command.clone(),
            source,
        })?;
        if !out.status.success() {
            return Err(OffloadError::Failed {
                command,
                status: out.status.to_string(),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
                hint: match (&rundir, &self.netns) {
                    (Some(d), _) => format!("{} its run dir", d.display()),
                    (None, Some(ns)) => format!("netns {ns} the one it runs in"),
                    (None, None) => "--ovs-rundir / --vswitchd-ctl / --netns right".into(),
                },
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn timeout_arg(&self) -> String {
        format!("--timeout={}", self.timeout.as_secs().max(1))
    }
}

impl OvsSource for OvsCtl {
    fn dump_flows(&self) -> Result<String, OffloadError> {
        let target = self
            .vswitchd_ctl
            .as_ref()
            .map_or_else(|| "ovs-vswitchd".to_owned(), |p| p.display().to_string());
        self.run(
            "ovs-appctl",
            &[
                self.timeout_arg(),
                "-t".into(),
                target,
                "dpctl/dump-flows".into(),
                "-m".into(),
            ],
        )
    }

    fn dump_groups(&self) -> Result<String, OffloadError> {
        self.run(
            "ovs-ofctl",
            &[
                self.timeout_arg(),
                "-O".into(),
                "OpenFlow15".into(),
                "dump-groups".into(),
                self.bridge.clone(),
            ],
        )
    }

    fn describe(&self) -> String {
        let mut s = String::from("ovs-vswitchd");
        if let Some(p) = &self.vswitchd_ctl {
            let _ = write!(s, " at {}", p.display());
        } else if let Some(d) = &self.rundir {
            let _ = write!(s, " in {}", d.display());
        }
        if let Some(ns) = &self.netns {
            let _ = write!(s, " (netns {ns})");
        }
        let _ = write!(s, ", bridge {}", self.bridge);
        s
    }
}

/// Saved dumps, e.g. test fixtures or files an operator captured elsewhere.
#[derive(Debug, Clone)]
pub struct SavedDumps {
    pub name: String,
    pub flows: String,
    pub groups: String,
}

impl OvsSource for SavedDumps {
    fn dump_flows(&self) -> Result<String, OffloadError> {
        Ok(self.flows.clone())
    }
    fn dump_groups(&self) -> Result<String, OffloadError> {
        Ok(self.groups.clone())
    }
    fn describe(&self) -> String {
        self.name.clone()
    }
}

/// Which flows the verdict (and the exit code) is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// The service path ([`path::service_path`]); other flows are listed, not judged.
    ServicePath,
    /// Every flow.
    All,
}

/// One classified flow.
#[derive(Debug, Clone, Serialize)]
pub struct FlowReport {
    /// 1-based line in the dump.
    pub line: usize,
    pub ufid: Option<String>,
    pub recirc_id: u32,
    pub in_port: Option<String>,
    /// Why it is on the service path; `None`: not on it.
    pub role: Option<Role>,
    /// Whether it counts for the verdict (on the service path, or `--all`).
    pub judged: bool,
    pub eligible: bool,
    pub reasons: Vec<Finding>,
    pub conditions: Vec<Finding>,
    pub packets: Option<u64>,
    /// What the dump says about where the flow is now (`dp:ovs`/`dp:tc`, `offloaded:yes`).
    pub dp: Option<String>,
    pub offloaded: Option<String>,
    pub matches: String,
    pub actions: String,
}

/// One select group.
#[derive(Debug, Clone, Serialize)]
pub struct GroupReport {
    #[serde(flatten)]
    pub group: Group,
    /// The datapath will select its buckets with `hash` + `dp_hash` (not offloadable).
    pub forces_dp_hash: bool,
}

/// Totals.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub flows: usize,
    pub service_path_flows: usize,
    pub judged: usize,
    pub judged_eligible: usize,
    pub judged_not_eligible: usize,
    /// Not-eligible flows outside the judged set (listed, not counted in the verdict).
    pub other_not_eligible: usize,
    /// Rule id → number of judged flows it makes not eligible.
    pub reasons: BTreeMap<String, usize>,
    /// Rule id → number of judged eligible flows that depend on it.
    pub conditions: BTreeMap<String, usize>,
    pub select_groups: usize,
    pub dp_hash_groups: Vec<u32>,
    /// Flows the dump shows as already in tc (`dp:tc`) / in hardware (`offloaded:yes`).
    pub in_tc: usize,
    pub in_hw: usize,
    /// True when every judged flow is eligible and no select group forces dp_hash.
    pub ok: bool,
}

/// The checker's result.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub source: String,
    pub scope: Scope,
    pub flows: Vec<FlowReport>,
    pub groups: Vec<GroupReport>,
    pub summary: Summary,
}

/// Reads both dumps from `source` and classifies them.
pub fn check(source: &dyn OvsSource, scope: Scope) -> Result<Report, OffloadError> {
    let name = source.describe();
    let flows_text = source.dump_flows()?;
    let groups_text = source.dump_groups()?;
    let flows = dpflow::parse_dump(&flows_text, &format!("dpctl/dump-flows of {name}"))?;
    let groups = groups::parse_groups(&groups_text, &format!("dump-groups of {name}"))?;
    Ok(classify_all(name, &flows, groups, scope))
}

/// Classifies parsed flows and groups (pure).
pub fn classify_all(source: String, flows: &[DpFlow], groups: Vec<Group>, scope: Scope) -> Report {
    let roles = path::service_path(flows, &groups);
    let mut summary = Summary {
        flows: flows.len(),
        service_path_flows: roles.iter().filter(|r| r.is_some()).count(),
        judged: 0,
        judged_eligible: 0,
        judged_not_eligible: 0,
        other_not_eligible: 0,
        reasons: BTreeMap::new(),
        conditions: BTreeMap::new(),
        select_groups: 0,
        dp_hash_groups: Vec::new(),
        in_tc: 0,
        in_hw: 0,
        ok: false,
    };
    let mut reports = Vec::with_capacity(flows.len());
    for (flow, role) in flows.iter().zip(roles) {
        let Verdict {
            eligible,
            reasons,
            conditions,
        } = rules::classify(flow);
        let judged = role.is_some() || scope == Scope::All;
        if judged {
            summary.judged += 1;
            if eligible {
                summary.judged_eligible += 1;
                for c in &conditions {
                    *summary.conditions.entry(c.rule.to_owned()).or_default() += 1;
                }
            } else {
                summary.judged_not_eligible += 1;
                let ids: std::collections::BTreeSet<&str> =
                    reasons.iter().map(|r| r.rule).collect();
                for id in ids {
                    *summary.reasons.entry(id.to_owned()).or_default() += 1;
                }
            }
        } else if !eligible {
            summary.other_not_eligible += 1;
        }
        summary.in_tc += usize::from(flow.dp.as_deref() == Some("tc"));
        summary.in_hw += usize::from(flow.offloaded.as_deref() == Some("yes"));
        reports.push(FlowReport {
            line: flow.line,
            ufid: flow.ufid.clone(),
            recirc_id: flow.recirc_id(),
            in_port: flow.in_port().map(str::to_owned),
            role,
            judged,
            eligible,
            reasons,
            conditions,
            packets: flow.packets,
            dp: flow.dp.clone(),
            offloaded: flow.offloaded.clone(),
            matches: compact_match(flow),
            actions: flow.actions_text.clone(),
        });
    }
    let groups: Vec<GroupReport> = groups
        .into_iter()
        .map(|group| GroupReport {
            forces_dp_hash: group.forces_dp_hash(),
            group,
        })
        .collect();
    summary.select_groups = groups
        .iter()
        .filter(|g| g.group.group_type == "select")
        .count();
    summary.dp_hash_groups = groups
        .iter()
        .filter(|g| g.forces_dp_hash)
        .map(|g| g.group.group_id)
        .collect();
    summary.ok = summary.judged_not_eligible == 0 && summary.dp_hash_groups.is_empty();
    Report {
        source,
        scope,
        flows: reports,
        groups,
        summary,
    }
}

/// The match without the fields `-m` prints fully wildcarded (`skb_mark(0/0)` …).
fn compact_match(flow: &DpFlow) -> String {
    flow.matches
        .iter()
        .filter(|t| {
            t.args().iter().any(|a| match a {
                dpflow::Term::Assign { value, .. } => {
                    dpflow::mask_part(value).is_none_or(|m| !dpflow::mask_is_zero(m))
                }
                dpflow::Term::Bare(b) => {
                    dpflow::mask_part(b).is_none_or(|m| !dpflow::mask_is_zero(m))
                }
                dpflow::Term::Call { .. } => true,
            })
        })
        .map(dpflow::Term::text)
        .collect::<Vec<_>>()
        .join(",")
}

fn clip(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_owned()
    } else {
        let mut out: String = s.chars().take(n.saturating_sub(1)).collect();
        out.push('…');
        out
    }
}

impl Report {
    /// The human table: one row per flow (judged ones first), the groups, a summary line.
    /// `verbose` also lists eligible flows off the service path and prints every flow's
    /// match and full actions under its row.
    pub fn render(&self, verbose: bool) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "offload-check of {} (rules: OVS 3.1 tc/flower offload code, see docs/offload.md)",
            self.source
        );
        let _ = writeln!(
            out,
            "{:>4}  {:<7} {:<7} {:<10} {:<13} {:<60} REASONS",
            "LINE", "PATH", "RECIRC", "IN_PORT", "VERDICT", "ACTIONS"
        );
        let mut order: Vec<&FlowReport> = self.flows.iter().collect();
        order.sort_by_key(|f| (!f.judged, f.recirc_id, f.line));
        for f in order {
            if !verbose && !f.judged && f.eligible {
                continue;
            }
            let verdict = match (f.judged, f.eligible) {
                (true, true) => "eligible",
                (true, false) => "NOT ELIGIBLE",
                (false, true) => "(eligible)",
                (false, false) => "(not elig.)",
            };
            let reasons: Vec<String> = f
                .reasons
                .iter()
                .map(|r| format!("{}: {}", r.rule, clip(&r.detail, 50)))
                .collect();
            let _ = writeln!(
                out,
                "{:>4}  {:<7} {:<7} {:<10} {:<13} {:<60} {}",
                f.line,
                f.role.map_or("-", Role::as_str),
                format!("{:#x}", f.recirc_id),
                clip(f.in_port.as_deref().unwrap_or("?"), 10),
                verdict,
                clip(&f.actions, 60),
                reasons.join("; ")
            );
            if verbose {
                let _ = writeln!(out, "      match: {}", f.matches);
                let _ = writeln!(out, "      actions: {}", f.actions);
            }
        }
        for g in &self.groups {
            let _ = writeln!(
                out,
                "group {} type={} selection_method={}{} buckets={} backends=[{}]{}",
                g.group.group_id,
                g.group.group_type,
                g.group
                    .selection_method
                    .as_deref()
                    .unwrap_or("(default: dp_hash)"),
                if g.group.fields.is_empty() {
                    String::new()
                } else {
                    format!(",fields({})", g.group.fields.join(","))
                },
                g.group.buckets,
                g.group.backends.join(","),
                if g.forces_dp_hash {
                    "  -> forces hash+dp_hash in the datapath: NOT offloadable (set Load_Balancer selection_fields)"
                } else {
                    ""
                }
            );
        }
        let mut seen_rules: Vec<&Finding> = Vec::new();
        for f in self.flows.iter().filter(|f| f.judged) {
            for r in f.reasons.iter().chain(&f.conditions) {
                if !seen_rules.iter().any(|s| s.rule == r.rule) {
                    seen_rules.push(r);
                }
            }
        }
        if !seen_rules.is_empty() {
            let _ = writeln!(out, "rules applied:");
            for r in seen_rules {
                let kind = if r.rule.starts_with("needs-") {
                    "condition"
                } else {
                    "blocks"
                };
                let _ = writeln!(out, "  {} [{kind}]: {} — {}", r.rule, r.summary, r.source);
            }
        }
        out.push_str(&self.summary_line());
        out.push('\n');
        out
    }

    /// One line: counts, reasons, groups, verdict.
    pub fn summary_line(&self) -> String {
        let s = &self.summary;
        let scope = match self.scope {
            Scope::ServicePath => "service-path",
            Scope::All => "all",
        };
        let reasons = if s.reasons.is_empty() {
            String::new()
        } else {
            format!(
                " ({})",
                s.reasons
                    .iter()
                    .map(|(k, v)| format!("{k}: {v}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        let groups = if s.dp_hash_groups.is_empty() {
            format!("{} select group(s), none uses dp_hash", s.select_groups)
        } else {
            format!(
                "{} select group(s), dp_hash in group(s) {:?}",
                s.select_groups, s.dp_hash_groups
            )
        };
        let idle = if s.judged == 0 {
            " [no flows to judge: send traffic through the services first]"
        } else {
            ""
        };
        format!(
            "summary: {} flows, {} {scope} flows judged: {} eligible, {} NOT eligible{reasons}; {} other flows not eligible; {groups}; in tc {}, in hw {} -> {}{idle}",
            s.flows,
            s.judged,
            s.judged_eligible,
            s.judged_not_eligible,
            s.other_not_eligible,
            s.in_tc,
            s.in_hw,
            if s.ok { "OK" } else { "NOT OFFLOADABLE" },
        )
    }
}
