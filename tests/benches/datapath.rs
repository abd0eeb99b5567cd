//! `hack/bench.sh datapath`: the cost of the load balancer in the real data path. A real
//! OVN sandbox (NB, SB, northd, ovn-controller, OVS userspace datapath), router `r1` between
//! switch `a` (the client pod) and switch `b` (two backend pods), a TCP echo server of our
//! own in each backend, and a load generator of our own in the client pod. In the same run:
//! - directly to a backend pod (across the router) vs through the VIP of an OVN load
//!   balancer (on both switches) in front of both pods;
//! - request/response on 8 persistent connections (`rr`: conntrack of established flows)
//!   and one new connection per request (`crr`: the LB's backend selection every time);
//! - default mode (OVN picks the bucket with `dp_hash`) vs offload mode
//!   (`selection_fields` set, as `ycloud-controller --offload` does), each followed by the
//!   offload checker on the node's datapath flows: the share of service-path flows that
//!   are eligible for tc flower offload.
//!
//! The benchmark binary is also the echo server (`--echo-server PORT`) and the load
//! generator (`--loadgen ADDR CONNS SECS rr|crr`), run inside the pods' namespaces with
//! `ip netns exec`, so no process needs to enter a namespace itself.
//!
//! Full: 10 s per case; `--quick`: 2 s.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use serde_json::{Value as Json, json};
use ycloud_controller::offload::{OvsCtl, Scope, check};
use ycloud_testsupport::fixtures::{pod, router_with_two_switches};
use ycloud_testsupport::sandbox::{Pod, Sandbox, SandboxOptions};

const MSG: usize = 64;
const CONNS: usize = 8;
const VIP: &str = "10.96.0.100";

fn echo_server(port: u16) -> ! {
    let l = TcpListener::bind(("0.0.0.0", port)).expect("bind echo server");
    for s in l.incoming() {
        let Ok(mut s) = s else { continue };
        std::thread::spawn(move || {
            let _ = s.set_nodelay(true);
            let mut buf = [0u8; MSG];
            while s.read_exact(&mut buf).is_ok() {
                if s.write_all(&buf).is_err() {
                    break;
                }
            }
        });
    }
    unreachable!("the listener never ends")
}

/// One request: `MSG` bytes out, the same back.
fn exchange(s: &mut TcpStream, buf: &mut [u8; MSG]) -> std::io::Result<()> {
    s.write_all(buf)?;
    s.read_exact(buf)
}

fn connect(addr: &str) -> std::io::Result<TcpStream> {
    let s = TcpStream::connect_timeout(&addr.parse().expect("address"), Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    s.set_nodelay(true)?;
    Ok(s)
}

/// Runs `conns` clients for `secs`; prints `{requests, errors, secs, p50_us, p99_us}`.
fn loadgen(addr: &str, conns: usize, secs: f64, kind: &str) {
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let started = Instant::now();
    let handles: Vec<_> = (0..conns)
        .map(|_| {
            let addr = addr.to_owned();
            let kind = kind.to_owned();
            std::thread::spawn(move || {
                let mut lat = Vec::new();
                let mut errors = 0u64;
                let mut buf = [7u8; MSG];
                let mut conn: Option<TcpStream> = None;
                while Instant::now() < deadline {
                    let t = Instant::now();
                    let res = (|| {
                        if kind == "crr" || conn.is_none() {
                            conn = Some(connect(&addr)?);
                        }
                        exchange(conn.as_mut().expect("connected"), &mut buf)
                    })();
                    match res {
                        Ok(()) => lat.push(t.elapsed().as_micros() as u64),
                        Err(_) => {
                            errors += 1;
                            conn = None;
                        }
                    }
                    if kind == "crr" {
                        conn = None;
                    }
                }
                (lat, errors)
            })
        })
        .collect();
    let mut lat = Vec::new();
    let mut errors = 0;
    for h in handles {
        let (l, e) = h.join().expect("client thread");
        lat.extend(l);
        errors += e;
    }
    let secs = started.elapsed().as_secs_f64();
    lat.sort_unstable();
    let p = |q: f64| {
        lat.get(((lat.len().max(1) - 1) as f64 * q) as usize)
            .copied()
    };
    println!(
        "{}",
        json!({"requests": lat.len(), "errors": errors, "secs": secs,
            "p50_us": p(0.5), "p99_us": p(0.99)})
    );
}

fn run_load(client: &Pod, exe: &str, addr: &str, secs: f64, kind: &str) -> Json {
    let out = client
        .exec_timeout(
            &[
                exe,
                "--loadgen",
                addr,
                &CONNS.to_string(),
                &secs.to_string(),
                kind,
            ],
            Duration::from_secs_f64(secs + 30.0),
        )
        .unwrap_or_else(|e| panic!("load generator to {addr}: {e}"));
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("load generator said {out:?}: {e}"))
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--echo-server") {
        echo_server(args[i + 1].parse().expect("port"));
    }
    if let Some(i) = args.iter().position(|a| a == "--loadgen") {
        loadgen(
            &args[i + 1],
            args[i + 2].parse().expect("conns"),
            args[i + 3].parse().expect("secs"),
            &args[i + 4],
        );
        return;
    }
    let quick = args.iter().any(|a| a == "--quick");
    let secs = if quick { 2.0 } else { 10.0 };
    let exe = std::env::current_exe().expect("own path");
    let exe = exe.to_str().expect("utf-8 path");

    let sb = Sandbox::up(SandboxOptions::default()).expect("sandbox");
    router_with_two_switches(&sb);
    let client = pod(
        &sb,
        "client",
        "a",
        "00:00:00:00:01:10",
        "10.0.1.10/24",
        "10.0.1.1",
    );
    let b1 = pod(
        &sb,
        "be1",
        "b",
        "00:00:00:00:02:11",
        "10.0.2.11/24",
        "10.0.2.1",
    );
    let b2 = pod(
        &sb,
        "be2",
        "b",
        "00:00:00:00:02:12",
        "10.0.2.12/24",
        "10.0.2.1",
    );
    let e1 = b1
        .spawn("echo server", &[exe, "--echo-server", "7000"])
        .expect("echo server 1");
    let e2 = b2
        .spawn("echo server", &[exe, "--echo-server", "7000"])
        .expect("echo server 2");
    sb.nbctl(&[
        "lb-add",
        "web",
        &format!("{VIP}:80"),
        "10.0.2.11:7000,10.0.2.12:7000",
        "tcp",
    ])
    .expect("lb-add");
    sb.nbctl(&["ls-lb-add", "a", "web", "--", "ls-lb-add", "b", "web"])
        .expect("ls-lb-add");
    sb.wait_hv_sync().expect("hv sync");
    // The echo servers listen and the path works, before anything is timed.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = run_load(&client, exe, &format!("{VIP}:80"), 0.2, "crr");
        if r["requests"].as_u64().unwrap_or(0) > 0 && r["errors"] == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "no path to the VIP: {r}");
        std::thread::sleep(Duration::from_millis(300));
    }

    let ovs = OvsCtl {
        rundir: Some(sb.env().get("OVS_RUNDIR").expect("OVS_RUNDIR").into()),
        vswitchd_ctl: None,
        bridge: "br-int".into(),
        netns: Some(sb.node_netns().to_owned()),
        timeout: Duration::from_secs(10),
    };
    let mut table = Vec::new();
    for mode in ["default", "offload"] {
        if mode == "offload" {
            sb.nbctl(&[
                "set",
                "Load_Balancer",
                "web",
                "selection_fields=ip_src,ip_dst,tp_src,tp_dst",
            ])
            .expect("selection_fields");
            sb.wait_hv_sync().expect("hv sync");
            let deadline = Instant::now() + Duration::from_secs(10);
            while sb
                .ofctl(&["dump-groups", "br-int"])
                .expect("groups")
                .contains("selection_method=dp_hash")
            {
                assert!(Instant::now() < deadline, "groups still use dp_hash");
                std::thread::sleep(Duration::from_millis(200));
            }
        }
        sb.appctl("ovs-vswitchd", &["dpctl/del-flows"])
            .expect("del-flows");
        for kind in ["rr", "crr"] {
            let mut rps = [0.0; 2];
            for (i, (target, addr)) in [("direct", "10.0.2.11:7000"), ("vip", "10.96.0.100:80")]
                .iter()
                .enumerate()
            {
                let r = run_load(&client, exe, addr, secs, kind);
                let n = r["requests"].as_f64().unwrap_or(0.0);
                rps[i] = n / r["secs"].as_f64().unwrap_or(1.0);
                let line = json!({"name": format!("datapath.{kind}.{target}"),
                    "params": {"mode": mode, "conns": CONNS, "msg_bytes": MSG, "secs": secs},
                    "value": rps[i].round(), "unit": "req/s",
                    "p50_us": r["p50_us"], "p99_us": r["p99_us"], "errors": r["errors"]});
                println!("{line}");
                table.push((
                    format!("{mode} {kind} {target}"),
                    rps[i],
                    r["p50_us"].as_u64().unwrap_or(0),
                    r["p99_us"].as_u64().unwrap_or(0),
                    r["errors"].as_u64().unwrap_or(0),
                ));
            }
            println!(
                "{}",
                json!({"name": format!("datapath.{kind}.vip_vs_direct"), "params": {"mode": mode},
                    "value": rps[1].round(), "unit": "req/s", "baseline": rps[0].round(),
                    "baseline_name": "direct to a pod", "ratio": (rps[1] / rps[0].max(1e-9) * 1000.0).round() / 1000.0})
            );
        }
        let report = check(&ovs, Scope::ServicePath).expect("offload check");
        let s = &report.summary;
        let share = s.judged_eligible as f64 / s.judged.max(1) as f64;
        println!(
            "{}",
            json!({"name": "datapath.offload_eligible_share", "params": {"mode": mode,
                "judged_flows": s.judged, "dp_hash_groups": s.dp_hash_groups.len(), "reasons": s.reasons},
                "value": (share * 1000.0).round() / 1000.0, "unit": "share", "ok": s.ok})
        );
        table.push((
            format!("{mode} offload-eligible flows"),
            share * 100.0,
            s.judged_eligible as u64,
            s.judged as u64,
            0,
        ));
    }
    println!();
    println!(
        "{:<32} {:>12} {:>9} {:>9} {:>7}",
        "case", "req/s | %", "p50 µs", "p99 µs", "errors"
    );
    for (name, v, p50, p99, e) in &table {
        if name.ends_with("flows") {
            println!("{name:<32} {v:>11.1}% {p50:>9} of {p99:<6} service-path flows eligible");
        } else {
            println!("{name:<32} {v:>12.0} {p50:>9} {p99:>9} {e:>7}");
        }
    }
    drop((e1, e2));
    drop((client, b1, b2));
    drop(sb);
}
