//! Parser for `ovs-appctl dpctl/dump-flows [-m]` output.
//!
//! One line per datapath flow, in the shape `lib/dpctl.c` (`format_dpif_flow`, OVS 3.1)
//! prints it:
//!
//! ```text
//! [ufid:UUID, ]MATCH, packets:N, bytes:N, used:T[, flags:F][, offloaded:yes|partial][, dp:ovs|tc], actions:ACTIONS[, dp-extra-info:…]
//! ```
//!
//! MATCH and ACTIONS are comma-separated lists of `name(…)` terms that nest (`ct(…,nat(…))`,
//! `check_pkt_len(…,gt(…),le(…))`, `tunnel(…,geneve({…}))`). Both are parsed into one generic
//! [`Term`] tree instead of a typed model of every OVS key: the classifier needs names,
//! sub-fields and masks, and a generic tree cannot fall behind a new OVS release's syntax.
//! Header lines (`flow-dump from the main thread:`, `flow-dump from pmd on cpu core: N`) and
//! blank lines are skipped; any other line that is not a flow is an error naming the line.

use serde::Serialize;

use super::OffloadError;

/// One node of a match or action list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Term {
    /// `name(args…)`, e.g. `recirc_id(0x6)`, `ct(commit,zone=5)`; `raw` is the text inside.
    Call {
        name: String,
        raw: String,
        args: Vec<Term>,
    },
    /// `key=value`, e.g. `zone=5`, `src=10.0.0.13/255.255.255.248`.
    Assign { key: String, value: String },
    /// Anything else: `commit`, `p-p3`, `3`, `0x6`, `+new-est+trk`, `{class=…}`.
    Bare(String),
}

impl Term {
    /// The term's name: a call's name, an assignment's key, or the bare text.
    pub fn name(&self) -> &str {
        match self {
            Term::Call { name, .. } => name,
            Term::Assign { key, .. } => key,
            Term::Bare(text) => text,
        }
    }

    /// A call's arguments (empty for the other kinds).
    pub fn args(&self) -> &[Term] {
        match self {
            Term::Call { args, .. } => args,
            Term::Assign { .. } | Term::Bare(_) => &[],
        }
    }

    /// The first argument of a call named `name` among `self`'s arguments.
    pub fn arg_call(&self, name: &str) -> Option<&Term> {
        self.args()
            .iter()
            .find(|t| matches!(t, Term::Call { name: n, .. } if n == name))
    }

    /// The value of `key=value` among `self`'s arguments.
    pub fn arg_value(&self, key: &str) -> Option<&str> {
        self.args().iter().find_map(|t| match t {
            Term::Assign { key: k, value } if k == key => Some(value.as_str()),
            _ => None,
        })
    }

    /// Whether a bare argument `word` is present (`commit` in `ct(commit,…)`).
    pub fn has_bare(&self, word: &str) -> bool {
        self.args()
            .iter()
            .any(|t| matches!(t, Term::Bare(b) if b == word))
    }

    /// Text form, as OVS printed it.
    pub fn text(&self) -> String {
        match self {
            Term::Call { name, raw, .. } => format!("{name}({raw})"),
            Term::Assign { key, value } => format!("{key}={value}"),
            Term::Bare(text) => text.clone(),
        }
    }
}

/// One datapath flow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DpFlow {
    /// 1-based line number in the dump.
    pub line: usize,
    pub ufid: Option<String>,
    pub match_text: String,
    pub matches: Vec<Term>,
    pub packets: Option<u64>,
    pub bytes: Option<u64>,
    pub used: Option<String>,
    pub flags: Option<String>,
    /// `dp:ovs` (OVS datapath: kernel module or userspace) or `dp:tc` (in tc).
    pub dp: Option<String>,
    /// `offloaded:yes` (tc says in hardware) or `offloaded:partial` (DPDK partial offload).
    pub offloaded: Option<String>,
    pub actions_text: String,
    pub actions: Vec<Term>,
}

impl DpFlow {
    /// The match field `name`, if printed.
    pub fn field(&self, name: &str) -> Option<&Term> {
        self.matches.iter().find(|t| t.name() == name)
    }

    /// `recirc_id(N)` (0 when absent: the plain dump omits a wildcarded one, and -m always
    /// prints it).
    pub fn recirc_id(&self) -> u32 {
        self.field("recirc_id")
            .and_then(|t| t.args().first())
            .and_then(|a| parse_u64(value_part(a.name())))
            .map(|v| v as u32)
            .unwrap_or(0)
    }

    /// `in_port(…)` as printed (a port name with -m, a number without).
    pub fn in_port(&self) -> Option<&str> {
        self.field("in_port")
            .and_then(|t| t.args().first())
            .map(|a| a.name())
    }

    /// Every `recirc(N)` target, including those nested in `check_pkt_len`, `clone`, `sample`.
    pub fn recirc_targets(&self) -> Vec<u32> {
        let mut out = Vec::new();
        walk(&self.actions, &mut |t| {
            if let Term::Call { name, args, .. } = t
                && name == "recirc"
                && let Some(v) = args.first().and_then(|a| parse_u64(a.name()))
            {
                out.push(v as u32);
            }
        });
        out
    }

    /// Backend addresses this flow DNATs to (`ct(…,nat(dst=IP[:PORT]))`, nested too).
    pub fn dnat_targets(&self) -> Vec<String> {
        let mut out = Vec::new();
        walk(&self.actions, &mut |t| {
            if t.name() == "nat"
                && let Some(dst) = t.arg_value("dst")
            {
                out.push(dst.to_owned());
            }
        });
        out
    }
}

/// Calls `f` on every term of `terms`, depth first.
pub fn walk<'a>(terms: &'a [Term], f: &mut impl FnMut(&'a Term)) {
    for t in terms {
        f(t);
        walk(t.args(), f);
    }
}

/// Parses a whole dump. `source` names it in errors (a file name or the command).
pub fn parse_dump(text: &str, source: &str) -> Result<Vec<DpFlow>, OffloadError> {
    let mut flows = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line_no = i + 1;
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with("flow-dump from") {
            continue;
        }
        let flow = parse_flow(trimmed, line_no).map_err(|reason| OffloadError::Parse {
            source_name: source.to_owned(),
            line: line_no,
            reason,
            text: trimmed.chars().take(300).collect(),
        })?;
        flows.push(flow);
    }
    Ok(flows)
}

/// The keys `format_dpif_flow` prints between the match and the actions.
const ATTR_KEYS: [&str; 6] = ["packets", "bytes", "used", "flags", "offloaded", "dp"];

/// Parses one flow line.
pub fn parse_flow(line: &str, line_no: usize) -> Result<DpFlow, String> {
    let (head, actions_part) = if let Some(rest) = line.strip_prefix("actions:") {
        ("", rest)
    } else {
        let at = line
            .find(", actions:")
            .ok_or("no `actions:`: not a datapath flow line")?;
        (&line[..at], &line[at + ", actions:".len()..])
    };
    // `dp-extra-info` follows the actions (userspace datapath, -m); actions never hold ", ".
    let actions_text = actions_part
        .split_once(", dp-extra-info:")
        .map_or(actions_part, |(a, _)| a)
        .trim()
        .to_owned();

    let mut flow = DpFlow {
        line: line_no,
        ufid: None,
        match_text: String::new(),
        matches: Vec::new(),
        packets: None,
        bytes: None,
        used: None,
        flags: None,
        dp: None,
        offloaded: None,
        actions: parse_list(&actions_text).map_err(|e| format!("actions: {e}"))?,
        actions_text,
    };
    let mut match_parts = Vec::new();
    for part in head.split(", ").filter(|p| !p.is_empty()) {
        if let Some(ufid) = part.strip_prefix("ufid:") {
            flow.ufid = Some(ufid.to_owned());
            continue;
        }
        let attr = part
            .split_once(':')
            .filter(|(k, _)| ATTR_KEYS.contains(k) && !part.contains('('));
        match attr {
            Some(("packets", v)) => flow.packets = Some(parse_count(v, "packets")?),
            Some(("bytes", v)) => flow.bytes = Some(parse_count(v, "bytes")?),
            Some(("used", v)) => flow.used = Some(v.to_owned()),
            Some(("flags", v)) => flow.flags = Some(v.to_owned()),
            Some(("offloaded", v)) => flow.offloaded = Some(v.to_owned()),
            Some(("dp", v)) => flow.dp = Some(v.to_owned()),
            _ => match_parts.push(part),
        }
    }
    flow.match_text = match_parts.join(", ");
    flow.matches = parse_list(&flow.match_text).map_err(|e| format!("match: {e}"))?;
    if let Some(t) = flow
        .matches
        .iter()
        .find(|t| !matches!(t, Term::Call { .. }))
    {
        return Err(format!("match: `{}` is not a `field(…)` term", t.text()));
    }
    Ok(flow)
}

fn parse_count(v: &str, what: &str) -> Result<u64, String> {
    v.parse()
        .map_err(|_| format!("`{what}:{v}` is not a number"))
}

/// Splits `text` at top-level commas (outside `()`, `{}` and `[]`) and parses each item.
pub fn parse_list(text: &str) -> Result<Vec<Term>, String> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(Vec::new());
    }
    split_top(text)?.into_iter().map(parse_term).collect()
}

fn split_top(text: &str) -> Result<Vec<&str>, String> {
    let mut out = Vec::new();
    let mut depth: Vec<char> = Vec::new();
    let mut start = 0;
    for (i, ch) in text.char_indices() {
        match ch {
            '(' => depth.push(')'),
            '{' => depth.push('}'),
            '[' => depth.push(']'),
            // the guard pops: a close that matches its opener falls through to `_`
            ')' | '}' | ']' if depth.pop() != Some(ch) => {
                return Err(format!("unbalanced `{ch}` at byte {i} of `{text}`"));
            }
            ',' if depth.is_empty() => {
                out.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if let Some(close) = depth.last() {
        return Err(format!("missing `{close}` in `{text}`"));
    }
    out.push(&text[start..]);
    Ok(out)
}

fn parse_term(item: &str) -> Result<Term, String> {
    let item = item.trim();
    if item.is_empty() {
        return Err("empty item (two commas in a row?)".into());
    }
    let ident_end = item
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))
        .unwrap_or(item.len());
    let ident = &item[..ident_end];
    let rest = &item[ident_end..];
    if !ident.is_empty() && rest.starts_with('(') {
        // split_top checked the balance, so the call closes at the last byte or not at all
        if !rest.ends_with(')') {
            return Err(format!("text after the closing `)` in `{item}`"));
        }
        let raw = &rest[1..rest.len() - 1];
        // `set(ipv4(…))` holds terms; `ct_state(+new-est)` or `in_port(p-p2)` one bare word:
        // the same recursive parse covers both.
        let args = parse_list(raw)?;
        return Ok(Term::Call {
            name: ident.to_owned(),
            raw: raw.to_owned(),
            args,
        });
    }
    if !ident.is_empty()
        && let Some(value) = rest.strip_prefix('=')
    {
        return Ok(Term::Assign {
            key: ident.to_owned(),
            value: value.to_owned(),
        });
    }
    Ok(Term::Bare(item.to_owned()))
}

/// `0x1f`, `31` → 31.
pub fn parse_u64(s: &str) -> Option<u64> {
    let s = s.trim();
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => s.parse().ok(),
    }
}

/// `value/mask` → `value`.
pub fn value_part(s: &str) -> &str {
    s.split_once('/').map_or(s, |(v, _)| v)
}

/// `value/mask` → `Some(mask)`; a value without a mask is an exact match: `None`.
pub fn mask_part(s: &str) -> Option<&str> {
    s.split_once('/').map(|(_, m)| m)
}

/// Whether a printed mask is all zero bits (`0`, `0x0`, `0.0.0.0`, `00:00:…`, `::`).
pub fn mask_is_zero(mask: &str) -> bool {
    !mask.is_empty()
        && mask
            .trim_start_matches("0x")
            .chars()
            .all(|c| matches!(c, '0' | ':' | '.'))
}
