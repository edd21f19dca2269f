use super::*;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn strings(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn rules(allow: &[&str], deny: &[&str]) -> EgressRules {
    EgressRules::parse(&strings(allow), &strings(deny), "network.").unwrap()
}

fn tcp(addr: &str, port: u16) -> Destination {
    Destination {
        ip: ip(addr),
        port,
        proto: Proto::Tcp,
    }
}

fn udp(addr: &str, port: u16) -> Destination {
    Destination {
        ip: ip(addr),
        port,
        proto: Proto::Udp,
    }
}

const NO_ENV: Environment<'static> = Environment {
    operator_allow: &[],
    host_addrs: &[],
    resolvers: &[],
};

#[test]
fn cidrs_parse_mask_and_match_both_families() {
    let c: Cidr = "10.1.2.3/8".parse().unwrap();
    assert_eq!(c.to_string(), "10.0.0.0/8");
    assert!(c.contains(ip("10.255.0.1")));
    assert!(!c.contains(ip("11.0.0.1")));
    assert!(
        c.contains(ip("::ffff:10.0.0.1")),
        "IPv4-mapped counts as IPv4"
    );
    let host: Cidr = "8.8.8.8".parse().unwrap();
    assert_eq!(host.prefix(), 32);
    assert!(host.contains(ip("8.8.8.8")) && !host.contains(ip("8.8.8.9")));
    let v6: Cidr = "2001:db8::/32".parse().unwrap();
    assert!(v6.contains(ip("2001:db8:1::5")));
    assert!(!v6.contains(ip("2001:db9::1")));
    assert!(!v6.contains(ip("10.0.0.1")));
    let all: Cidr = "0.0.0.0/0".parse().unwrap();
    assert!(all.contains(ip("1.2.3.4")) && !all.contains(ip("2001:db8::1")));
    for bad in ["10.0.0.0/33", "::/129", "10.0.0/8", "1.2.3.4/x", "", "/8"] {
        assert!(bad.parse::<Cidr>().is_err(), "{bad}");
    }
}

#[test]
fn every_internal_range_is_refused_by_default() {
    let internal = [
        "0.0.0.0",
        "0.1.2.3",
        "10.0.0.1",
        "10.255.255.255",
        "100.64.0.1",
        "100.127.255.254",
        "127.0.0.1",
        "127.1.2.3",
        "169.254.169.254",
        "169.254.0.1",
        "172.16.0.1",
        "172.31.255.255",
        "192.0.0.170",
        "192.168.1.1",
        "198.18.0.1",
        "224.0.0.1",
        "239.255.255.250",
        "255.255.255.255",
        "240.0.0.1",
        "::",
        "::1",
        "::ffff:127.0.0.1",
        "::ffff:169.254.169.254",
        "::127.0.0.1",
        "64:ff9b::a9fe:a9fe",
        "64:ff9b::10.0.0.1",
        "64:ff9b:1::1",
        "2002:a9fe:a9fe::1",
        "fc00::1",
        "fd12:3456::1",
        "fe80::1",
        "fec0::1",
        "ff02::1",
    ];
    let all_allowed = rules(&["0.0.0.0/0"], &[]);
    for addr in internal {
        let verdict = decide(tcp(addr, 80), &all_allowed, &NO_ENV);
        assert!(
            matches!(verdict, Verdict::Refuse(Refused::Internal(_))),
            "{addr}: {verdict:?}"
        );
    }
    let public = [
        "1.1.1.1",
        "8.8.8.8",
        "9.255.255.255",
        "11.0.0.1",
        "100.63.255.255",
        "100.128.0.1",
        "172.15.255.255",
        "172.32.0.1",
        "192.0.2.1",
        "192.169.0.1",
        "198.51.100.7",
        "203.0.113.10",
        "223.255.255.255",
        "2001:db8::1",
        "2606:4700::1111",
        "64:ff9b::8.8.8.8",
        "::ffff:8.8.8.8",
    ];
    for addr in public {
        assert_eq!(
            decide(tcp(addr, 443), &EgressRules::default(), &NO_ENV),
            Verdict::Allow(Allowed::NotDenied),
            "{addr}"
        );
    }
}

#[test]
fn host_addresses_are_internal_and_the_operator_can_lift_internal_ranges() {
    let hosts = [ip("203.0.113.1"), ip("2001:db8::7")];
    let allow = ["10.77.0.5/32".parse().unwrap()];
    let env = Environment {
        operator_allow: &allow,
        host_addrs: &hosts,
        resolvers: &[],
    };
    let r = EgressRules::default();
    assert_eq!(
        decide(tcp("203.0.113.1", 22), &r, &env),
        Verdict::Refuse(Refused::HostAddress)
    );
    assert_eq!(
        decide(tcp("::ffff:203.0.113.1", 22), &r, &env),
        Verdict::Refuse(Refused::HostAddress)
    );
    assert_eq!(
        decide(tcp("2001:db8::7", 22), &r, &env),
        Verdict::Refuse(Refused::HostAddress)
    );
    // Exactly the operator's range is opened.
    assert_eq!(
        decide(tcp("10.77.0.5", 80), &r, &env),
        Verdict::Allow(Allowed::NotDenied)
    );
    assert!(matches!(
        decide(tcp("10.77.0.6", 80), &r, &env),
        Verdict::Refuse(Refused::Internal(_))
    ));
    // The sandbox's own rules still apply inside the operator's range.
    assert_eq!(
        decide(tcp("10.77.0.5", 80), &rules(&[], &["10.77.0.0/16"]), &env),
        Verdict::Refuse(Refused::DenyRule)
    );
}

#[test]
fn a_sandbox_cannot_allow_itself_internal_destinations() {
    let r = rules(
        &["169.254.169.254", "10.0.0.0/8", "127.0.0.1/32", "::1"],
        &[],
    );
    for addr in ["169.254.169.254", "10.1.1.1", "127.0.0.1", "::1"] {
        assert!(
            matches!(
                decide(tcp(addr, 80), &r, &NO_ENV),
                Verdict::Refuse(Refused::Internal(_))
            ),
            "{addr}"
        );
    }
}

#[test]
fn dns_to_the_host_resolver_is_allowed_even_when_internal_or_all_is_denied() {
    let resolvers = [ip("10.255.255.53")];
    let env = Environment {
        resolvers: &resolvers,
        ..NO_ENV
    };
    let deny_all = EgressRules::deny_all();
    assert_eq!(
        decide(udp("10.255.255.53", 53), &deny_all, &env),
        Verdict::Allow(Allowed::Dns)
    );
    assert_eq!(
        decide(tcp("10.255.255.53", 53), &deny_all, &env),
        Verdict::Allow(Allowed::Dns)
    );
    // Only port 53, only to the resolver.
    assert!(matches!(
        decide(tcp("10.255.255.53", 80), &deny_all, &env),
        Verdict::Refuse(Refused::Internal(_))
    ));
    assert!(matches!(
        decide(udp("10.255.255.54", 53), &deny_all, &env),
        Verdict::Refuse(Refused::Internal(_))
    ));
    assert_eq!(
        decide(udp("8.8.8.8", 53), &deny_all, &env),
        Verdict::Refuse(Refused::DenyRule)
    );
}

#[test]
fn allow_beats_deny_and_no_rules_allow_everything_public() {
    let r = rules(&["8.8.8.0/24"], &["0.0.0.0/0"]);
    assert_eq!(
        decide(tcp("8.8.8.8", 443), &r, &NO_ENV),
        Verdict::Allow(Allowed::AllowRule)
    );
    assert_eq!(
        decide(tcp("8.8.4.4", 443), &r, &NO_ENV),
        Verdict::Refuse(Refused::DenyRule)
    );
    assert_eq!(
        decide(tcp("2001:db8::1", 443), &r, &NO_ENV),
        Verdict::Refuse(Refused::DenyRule),
        "0.0.0.0/0 is all traffic, IPv6 included"
    );
    let r = rules(&[], &["1.1.1.1"]);
    assert_eq!(
        decide(udp("1.1.1.1", 53), &r, &NO_ENV),
        Verdict::Refuse(Refused::DenyRule)
    );
    assert_eq!(
        decide(udp("1.0.0.1", 53), &r, &NO_ENV),
        Verdict::Allow(Allowed::NotDenied)
    );
    // allowOut alone restricts nothing (E2B: allow only matters against a deny).
    assert_eq!(
        decide(tcp("9.9.9.9", 443), &rules(&["1.1.1.1"], &[]), &NO_ENV),
        Verdict::Allow(Allowed::NotDenied)
    );
    let v6 = rules(&["2001:db8:1::/48"], &["2001:db8::/32"]);
    assert_eq!(
        decide(tcp("2001:db8:1::9", 443), &v6, &NO_ENV),
        Verdict::Allow(Allowed::AllowRule)
    );
    assert_eq!(
        decide(tcp("2001:db8:2::9", 443), &v6, &NO_ENV),
        Verdict::Refuse(Refused::DenyRule)
    );
}

#[test]
fn domains_only_open_http_and_https_over_tcp_for_denied_addresses() {
    let r = rules(&["api.example.com", "*.pkg.dev"], &["0.0.0.0/0"]);
    assert_eq!(
        decide(tcp("93.184.216.34", 443), &r, &NO_ENV),
        Verdict::CheckDomain
    );
    assert_eq!(
        decide(tcp("93.184.216.34", 80), &r, &NO_ENV),
        Verdict::CheckDomain
    );
    assert_eq!(
        decide(tcp("93.184.216.34", 22), &r, &NO_ENV),
        Verdict::Refuse(Refused::DenyRule)
    );
    assert_eq!(
        decide(udp("93.184.216.34", 443), &r, &NO_ENV),
        Verdict::Refuse(Refused::DenyRule),
        "QUIC is filtered by address only"
    );
    // Internal stays internal even with domain rules.
    assert!(matches!(
        decide(tcp("169.254.169.254", 80), &r, &NO_ENV),
        Verdict::Refuse(Refused::Internal(_))
    ));
    // Without a domain rule a denied address is simply refused.
    assert_eq!(
        decide(
            tcp("93.184.216.34", 443),
            &rules(&[], &["0.0.0.0/0"]),
            &NO_ENV
        ),
        Verdict::Refuse(Refused::DenyRule)
    );
    assert!(r.allows_domain("API.Example.com."));
    assert!(!r.allows_domain("example.com"));
    assert!(!r.allows_domain("xapi.example.com"));
}

#[test]
fn wildcards_match_subdomains_at_any_depth_but_not_the_apex() {
    let p: DomainPattern = "*.example.com".parse().unwrap();
    assert!(p.matches("a.example.com"));
    assert!(p.matches("a.b.example.com"));
    assert!(p.matches("A.EXAMPLE.COM."));
    assert!(!p.matches("example.com"));
    assert!(!p.matches("badexample.com"));
    assert!(!p.matches("example.com.evil.net"));
    assert_eq!(p.to_string(), "*.example.com");
    let exact: DomainPattern = "Example.COM.".parse().unwrap();
    assert!(exact.matches("example.com") && !exact.matches("www.example.com"));
}

#[test]
fn invalid_rules_name_the_field_with_its_index_and_what_is_allowed() {
    let err = EgressRules::parse(
        &strings(&["8.8.8.8", "example.com", "exa mple.com"]),
        &[],
        "network.",
    )
    .unwrap_err();
    assert_eq!(err.field, "network.allowOut[2]");
    assert!(err.reason.contains("*.example.com"), "{err}");
    let err = EgressRules::parse(&[], &strings(&["10.0.0.0/8", "example.com"]), "").unwrap_err();
    assert_eq!(err.field, "denyOut[1]");
    assert!(
        err.to_string().contains("domains are allowed in allowOut"),
        "{err}"
    );
    for bad in [
        "10.0.0.0/33",
        "300.1.1.1",
        "1.2.3",
        "::g",
        "*",
        "*.",
        "a..b",
        "-a.com",
        "ünï.com",
        "a.*.com",
    ] {
        let err = EgressRules::parse(&strings(&[bad]), &[], "network.").unwrap_err();
        assert_eq!(err.field, "network.allowOut[0]", "{bad}");
    }
    let many = vec!["1.1.1.1".to_owned(); MAX_RULES + 1];
    let err = EgressRules::parse(&[], &many, "network.").unwrap_err();
    assert_eq!(err.field, "network.denyOut");
    let long = format!("{}.com", "a".repeat(500));
    let err = EgressRules::parse(&[long], &[], "").unwrap_err();
    assert!(err.value.len() <= 100);
}

#[test]
fn only_all_denied_and_nothing_allowed_means_no_traffic() {
    assert!(EgressRules::default().allows_any_traffic());
    assert!(!EgressRules::deny_all().allows_any_traffic());
    assert!(rules(&["1.1.1.1"], &["0.0.0.0/0"]).allows_any_traffic());
    assert!(rules(&["example.com"], &["0.0.0.0/0"]).allows_any_traffic());
    assert!(
        rules(&[], &["::/0"]).allows_any_traffic(),
        "IPv4 is still open"
    );
    assert!(rules(&[], &["8.8.8.8"]).allows_any_traffic());
    let r = rules(&["a.com"], &["0.0.0.0/0"]);
    assert_eq!(r.allow_out(), ["a.com"]);
    assert_eq!(r.deny_out(), ["0.0.0.0/0"]);
}

#[test]
fn a_port_scoped_operator_allow_opens_one_tcp_port_only() {
    // An operator opens a gateway on the host (10.77.0.1:8080) to sandboxes: a sandbox
    // must not use that to reach the host's other services on the same address (its
    // other TCP ports, UDP on that port, or the same port on a neighbour).
    let allow: [OperatorAllow; 2] = [
        "10.77.0.1:8080".parse().unwrap(),
        "[fd00::1]:443".parse().unwrap(),
    ];
    let hosts = [ip("10.77.0.1")];
    let env = Environment {
        operator_allow: &allow,
        host_addrs: &hosts,
        resolvers: &[],
    };
    let r = EgressRules::default();
    assert_eq!(
        decide(tcp("10.77.0.1", 8080), &r, &env),
        Verdict::Allow(Allowed::NotDenied)
    );
    assert!(matches!(
        decide(tcp("10.77.0.1", 8081), &r, &env),
        Verdict::Refuse(Refused::Internal(_))
    ));
    assert!(matches!(
        decide(udp("10.77.0.1", 8080), &r, &env),
        Verdict::Refuse(Refused::Internal(_))
    ));
    assert!(matches!(
        decide(tcp("10.77.0.2", 8080), &r, &env),
        Verdict::Refuse(Refused::Internal(_))
    ));
    assert_eq!(
        decide(tcp("fd00::1", 443), &r, &env),
        Verdict::Allow(Allowed::NotDenied)
    );
    assert!(matches!(
        decide(tcp("fd00::1", 80), &r, &env),
        Verdict::Refuse(Refused::Internal(_))
    ));
    // The sandbox's own denyOut still applies inside it.
    assert_eq!(
        decide(tcp("10.77.0.1", 8080), &rules(&[], &["10.77.0.1"]), &env),
        Verdict::Refuse(Refused::DenyRule)
    );
}

#[test]
fn operator_allow_entries_parse_with_and_without_ports() {
    for (text, shown, port) in [
        ("10.1.2.3", "10.1.2.3/32", None),
        ("10.0.0.0/8", "10.0.0.0/8", None),
        ("fd00::/8", "fd00::/8", None),
        ("::1", "::1/128", None),
        ("10.1.2.3:8080", "10.1.2.3/32:8080", Some(8080)),
        ("10.0.0.0/8:443", "10.0.0.0/8:443", Some(443)),
        ("[fd00::1]:8080", "[fd00::1/128]:8080", Some(8080)),
        ("[fd00::/8]:443", "[fd00::/8]:443", Some(443)),
    ] {
        let a: OperatorAllow = text.parse().unwrap_or_else(|e| panic!("{text}: {e}"));
        assert_eq!((a.to_string().as_str(), a.port()), (shown, port), "{text}");
        assert_eq!(a.to_string().parse::<OperatorAllow>().unwrap(), a, "{text}");
    }
    for bad in [
        "10.1.2.3:0",
        "10.1.2.3:65536",
        "10.1.2.3:http",
        "[fd00::1]",
        "[fd00::1:8080",
        "fd00::1]:80",
        "10.1.2.3/33:80",
        "",
    ] {
        assert!(bad.parse::<OperatorAllow>().is_err(), "{bad}");
    }
}
