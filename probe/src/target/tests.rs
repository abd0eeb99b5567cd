use super::*;

fn hc(kind: ProbeType) -> HealthCheck {
    serde_json::from_value(serde_json::json!({"type": kind})).expect("a health check")
}

#[test]
fn an_http_probe_defaults_to_slash_the_address_as_host_and_200_to_399() {
    let t = Target::new(
        "p",
        &hc(ProbeType::HTTP),
        "10.0.0.5".parse().unwrap(),
        Some(8080),
    )
    .unwrap();
    assert_eq!(
        t.check,
        Check::Http {
            tls: false,
            path: "/".into(),
            host: "10.0.0.5:8080".into(),
            expected: StatusRange { min: 200, max: 399 }
        }
    );
    assert_eq!(t.timeout, Duration::from_millis(1000));
    let t6 = Target::new(
        "p",
        &hc(ProbeType::HTTPS),
        "fd00::5".parse().unwrap(),
        Some(443),
    )
    .unwrap();
    assert!(matches!(t6.check, Check::Http { ref host, tls: true, .. } if host == "[fd00::5]"));
}

#[test]
fn a_tcp_probe_without_a_port_is_rejected_naming_the_probe() {
    let e = Target::new(
        "shop/x",
        &hc(ProbeType::TCP),
        "10.0.0.5".parse().unwrap(),
        None,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("shop/x") && e.contains("needs a port"), "{e}");
}

#[test]
fn an_icmp_probe_needs_no_port() {
    let t = Target::new("p", &hc(ProbeType::ICMP), "10.0.0.5".parse().unwrap(), None).unwrap();
    assert_eq!((t.check, t.port), (Check::Icmp, None));
}

#[test]
fn a_path_or_host_that_could_inject_headers_is_rejected() {
    let mut h = hc(ProbeType::HTTP);
    h.path = Some("/x HTTP/1.1\r\nEvil: 1".into());
    assert!(Target::new("p", &h, "10.0.0.5".parse().unwrap(), Some(80)).is_err());
    let mut h = hc(ProbeType::HTTP);
    h.host = Some("a\r\nb".into());
    assert!(Target::new("p", &h, "10.0.0.5".parse().unwrap(), Some(80)).is_err());
}

#[test]
fn the_backend_port_wins_over_the_health_check_port() {
    let spec: NetworkProbeSpec = serde_json::from_value(serde_json::json!({
        "service": "s",
        "backend": {"kind": "Pod", "address": "10.0.0.5", "port": 9000},
        "probe": {"type": "TCP", "port": 80}
    }))
    .unwrap();
    assert_eq!(Target::from_spec("p", &spec).unwrap().port, Some(9000));
}
