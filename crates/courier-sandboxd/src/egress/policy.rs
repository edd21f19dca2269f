//! The egress decision, pure: E2B's `allowOut`/`denyOut` rules parsed and validated, the
//! built-in internal ranges, and [`decide`], which says what happens to one outbound
//! connection or datagram. No I/O: the caller passes the host's addresses, the
//! operator's allow list and the resolvers in an [`Environment`].
//!
//! Order of the decision (first match wins):
//!
//! 1. DNS — TCP or UDP port 53 to a resolver the host's `/etc/resolv.conf` named when the
//!    sandbox's network was attached is allowed, even when the resolver is internal
//!    (slirp4netns forwards the sandbox's `10.0.2.3` there). DNS is not filtered, as on E2B.
//! 2. Internal — loopback, link-local (cloud metadata), private, CGNAT, multicast,
//!    reserved ranges and the host's own addresses are refused unless the operator's
//!    allow list (`--egress-allow`) covers the address. A sandbox's own `allowOut`
//!    cannot lift this.
//! 3. `allowOut` CIDR or IP — allowed ("allow beats deny").
//! 4. `denyOut` CIDR or IP — refused, except TCP to port 80 or 443 when `allowOut` has
//!    domains: then [`Verdict::CheckDomain`] (the domain proxy lets it through only if
//!    the TLS SNI or HTTP Host names an allowed domain that resolves to this address).
//! 5. Everything else is allowed (E2B: no `allowOut` and nothing denied = all traffic).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// Most entries accepted in one `allowOut` or `denyOut` list.
pub const MAX_RULES: usize = 1000;

/// Ports on which an `allowOut` domain can let a denied address through: HTTP (the
/// `Host` header names the domain) and HTTPS (the TLS SNI does).
pub const DOMAIN_PORTS: [u16; 2] = [80, 443];

/// E2B's spelling of "all traffic" in `allowOut`/`denyOut`. It covers IPv6 too.
pub const ALL_TRAFFIC: &str = "0.0.0.0/0";

/// An IPv4 or IPv6 network: an address and a prefix length (host bits cleared).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    net: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// The network of `addr` with `prefix` bits; `None` when the prefix is longer than
    /// the address (32 for IPv4, 128 for IPv6). Host bits are cleared.
    pub fn new(addr: IpAddr, prefix: u8) -> Option<Self> {
        match addr {
            IpAddr::V4(v4) if prefix <= 32 => Some(Self {
                net: IpAddr::V4(Ipv4Addr::from(u32::from(v4) & mask_v4(prefix))),
                prefix,
            }),
            IpAddr::V6(v6) if prefix <= 128 => Some(Self {
                net: IpAddr::V6(Ipv6Addr::from(u128::from(v6) & mask_v6(prefix))),
                prefix,
            }),
            _ => None,
        }
    }

    /// The single address `ip` (`/32` or `/128`).
    pub fn host(ip: IpAddr) -> Self {
        let prefix = if ip.is_ipv4() { 32 } else { 128 };
        Self { net: ip, prefix }
    }

    /// The network address.
    pub fn addr(&self) -> IpAddr {
        self.net
    }

    /// The prefix length.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// Whether `ip` is in this network. IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`)
    /// count as their IPv4 address.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.net, canonical(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                u32::from(ip) & mask_v4(self.prefix) == u32::from(net)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                u128::from(ip) & mask_v6(self.prefix) == u128::from(net)
            }
            _ => false,
        }
    }
}

fn mask_v4(prefix: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0)
}

fn mask_v6(prefix: u8) -> u128 {
    u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0)
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.net, self.prefix)
    }
}

/// Why a string is not a [`Cidr`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CidrError(String);

impl FromStr for Cidr {
    type Err = CidrError;

    /// `10.0.0.0/8`, `8.8.8.8` (= `/32`), `2001:db8::/32`, `::1` (= `/128`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (addr, prefix) = match s.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (s, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| CidrError(format!("{addr:?} is not an IPv4 or IPv6 address")))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| CidrError(format!("prefix length {p:?} must be 0..={max}")))?,
        };
        Cidr::new(addr, prefix).ok_or_else(|| CidrError("invalid prefix".into()))
    }
}

/// The address an IPv4-mapped IPv6 address stands for; any other address unchanged.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// A domain of `allowOut`: `api.example.com` (that name only) or `*.example.com` (every
/// name under `example.com`, at any depth, not `example.com` itself).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DomainPattern {
    /// Lowercase, without a trailing dot.
    name: String,
    wildcard: bool,
}

impl DomainPattern {
    /// Whether `host` (a TLS SNI or HTTP Host name, any case, trailing dot allowed)
    /// matches.
    pub fn matches(&self, host: &str) -> bool {
        let host = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
        if self.wildcard {
            host.len() > self.name.len() + 1
                && host.ends_with(&self.name)
                && host.as_bytes()[host.len() - self.name.len() - 1] == b'.'
        } else {
            host == self.name
        }
    }
}

impl fmt::Display for DomainPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.wildcard {
            write!(f, "*.{}", self.name)
        } else {
            f.write_str(&self.name)
        }
    }
}

impl FromStr for DomainPattern {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (wildcard, rest) = match s.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, s),
        };
        let name = rest.strip_suffix('.').unwrap_or(rest).to_ascii_lowercase();
        if !name.is_ascii() {
            return Err(
                "is not an ASCII domain: write internationalized names in their \
                        punycode (xn--) form"
                    .into(),
            );
        }
        if name.is_empty() || name.len() > 253 {
            return Err("must be a domain name of 1-253 characters".into());
        }
        for label in name.split('.') {
            let ok = (1..=63).contains(&label.len())
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                && !label.starts_with('-')
                && !label.ends_with('-');
            if !ok {
                return Err(format!(
                    "has an invalid label {label:?}: labels are 1-63 of [a-z0-9-_], \
                     not starting or ending with '-'; '*' only as the whole first label"
                ));
            }
        }
        if name
            .rsplit('.')
            .next()
            .is_some_and(|tld| tld.bytes().all(|b| b.is_ascii_digit()))
        {
            return Err(
                "is neither an IP address nor a domain (a domain's last label is not \
                        all digits)"
                    .into(),
            );
        }
        Ok(Self { name, wildcard })
    }
}

/// A rule that could not be accepted: the field with its index (`network.allowOut[2]`),
/// the value and what is allowed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {value:?} {reason}")]
pub struct RuleError {
    /// The field, e.g. `network.allowOut[2]` (create) or `denyOut[0]` (network update).
    pub field: String,
    /// The offending value (at most 100 characters of it).
    pub value: String,
    /// Why, and what would be accepted.
    pub reason: String,
}

impl RuleError {
    fn new(field: String, value: &str, reason: impl Into<String>) -> Self {
        Self {
            field,
            value: value.chars().take(100).collect(),
            reason: reason.into(),
        }
    }
}

/// A sandbox's validated E2B egress rules (`allowOut`, `denyOut`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EgressRules {
    allow_out: Vec<String>,
    deny_out: Vec<String>,
    allow_cidrs: Vec<Cidr>,
    allow_domains: Vec<DomainPattern>,
    deny: Vec<Cidr>,
}

impl EgressRules {
    /// Parses E2B's lists. `field_prefix` names where they came from in errors:
    /// `"network."` for a create request (`network.allowOut[2]`), `""` for a network
    /// update (`allowOut[2]`).
    ///
    /// `allowOut` entries are CIDRs, IP addresses or domains (`example.com`,
    /// `*.example.com`); `denyOut` entries CIDRs or IP addresses. [`ALL_TRAFFIC`]
    /// (`0.0.0.0/0`) in either list stands for IPv6 too.
    pub fn parse(
        allow_out: &[String],
        deny_out: &[String],
        field_prefix: &str,
    ) -> Result<Self, RuleError> {
        let mut rules = Self {
            allow_out: allow_out.to_vec(),
            deny_out: deny_out.to_vec(),
            ..Self::default()
        };
        for (list, name) in [(allow_out, "allowOut"), (deny_out, "denyOut")] {
            if list.len() > MAX_RULES {
                return Err(RuleError::new(
                    format!("{field_prefix}{name}"),
                    &format!("{} entries", list.len()),
                    format!("is too many: at most {MAX_RULES}"),
                ));
            }
        }
        for (i, entry) in allow_out.iter().enumerate() {
            let field = format!("{field_prefix}allowOut[{i}]");
            match parse_address_rule(entry) {
                Ok(cidrs) => rules.allow_cidrs.extend(cidrs),
                Err(AddressRuleError::NotAnAddress) => match entry.parse::<DomainPattern>() {
                    Ok(domain) => rules.allow_domains.push(domain),
                    Err(why) => {
                        return Err(RuleError::new(
                            field,
                            entry,
                            format!(
                                "{why}; allowOut takes CIDRs (10.0.0.0/8), IP addresses \
                                 (8.8.8.8) and domains (example.com, *.example.com)"
                            ),
                        ));
                    }
                },
                Err(AddressRuleError::Invalid(why)) => {
                    return Err(RuleError::new(
                        field,
                        entry,
                        format!("is not a valid CIDR or IP address: {why}"),
                    ));
                }
            }
        }
        for (i, entry) in deny_out.iter().enumerate() {
            let field = format!("{field_prefix}denyOut[{i}]");
            match parse_address_rule(entry) {
                Ok(cidrs) => rules.deny.extend(cidrs),
                Err(AddressRuleError::NotAnAddress) => {
                    return Err(RuleError::new(
                        field,
                        entry,
                        "is not a CIDR or IP address: denyOut takes CIDRs (10.0.0.0/8) and \
                         IP addresses (8.8.8.8) only; domains are allowed in allowOut",
                    ));
                }
                Err(AddressRuleError::Invalid(why)) => {
                    return Err(RuleError::new(
                        field,
                        entry,
                        format!("is not a valid CIDR or IP address: {why}"),
                    ));
                }
            }
        }
        Ok(rules)
    }

    /// `denyOut: ["0.0.0.0/0"]`: nothing but DNS.
    pub fn deny_all() -> Self {
        Self::parse(&[], &[ALL_TRAFFIC.to_owned()], "").expect("constant rule")
    }

    /// `allowOut` as given.
    pub fn allow_out(&self) -> &[String] {
        &self.allow_out
    }

    /// `denyOut` as given.
    pub fn deny_out(&self) -> &[String] {
        &self.deny_out
    }

    /// The domains of `allowOut`.
    pub fn allow_domains(&self) -> &[DomainPattern] {
        &self.allow_domains
    }

    /// Whether a domain of `allowOut` matches `host`.
    pub fn allows_domain(&self, host: &str) -> bool {
        self.allow_domains.iter().any(|d| d.matches(host))
    }

    /// Whether these rules let any traffic out (besides DNS): false only when all traffic
    /// is denied and nothing is allowed. A sandbox whose rules let nothing out gets no
    /// outbound interface at all.
    pub fn allows_any_traffic(&self) -> bool {
        let all_v4 = Cidr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0).expect("/0");
        let all_v6 = Cidr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0).expect("/0");
        let denies_all = self.deny.contains(&all_v4) && self.deny.contains(&all_v6);
        !denies_all || !self.allow_cidrs.is_empty() || !self.allow_domains.is_empty()
    }
}

enum AddressRuleError {
    /// Does not look like an address at all (maybe a domain).
    NotAnAddress,
    /// Looks like an address but is not a valid one.
    Invalid(String),
}

/// A CIDR or IP rule; [`ALL_TRAFFIC`] expands to the IPv4 and the IPv6 "everything".
fn parse_address_rule(entry: &str) -> Result<Vec<Cidr>, AddressRuleError> {
    if entry == ALL_TRAFFIC {
        return Ok(vec![
            Cidr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0).expect("/0"),
            Cidr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0).expect("/0"),
        ]);
    }
    match entry.parse::<Cidr>() {
        Ok(cidr) => Ok(vec![cidr]),
        Err(CidrError(why)) => {
            // A slash, a colon, or only digits and dots: meant as an address.
            let addressy = entry.contains('/')
                || entry.contains(':')
                || entry.bytes().all(|b| b.is_ascii_digit() || b == b'.');
            if addressy {
                Err(AddressRuleError::Invalid(why))
            } else {
                Err(AddressRuleError::NotAnAddress)
            }
        }
    }
}

/// The transport of an outbound connection or datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
    /// Anything else (ICMP echo, ...): filtered by address only.
    Other,
}

/// Where a sandbox's traffic is going.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Destination {
    /// Destination address.
    pub ip: IpAddr,
    /// Destination port (0 where there is none).
    pub port: u16,
    /// Transport.
    pub proto: Proto,
}

/// What [`decide`] needs to know about the host and the operator.
#[derive(Debug, Clone, Copy, Default)]
pub struct Environment<'a> {
    /// The operator's allow list: internal destinations in it are not refused.
    pub operator_allow: &'a [Cidr],
    /// The host's own addresses (every interface of the server's network namespace).
    pub host_addrs: &'a [IpAddr],
    /// The resolvers slirp4netns forwards the sandbox's DNS to.
    pub resolvers: &'a [IpAddr],
}

/// Why a destination is allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Allowed {
    /// DNS to the host's resolver.
    Dns,
    /// An `allowOut` CIDR or IP covers it.
    AllowRule,
    /// Nothing denies it.
    NotDenied,
}

/// Why a destination is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// In a built-in internal range (the name says which) and not allowed by the operator.
    Internal(&'static str),
    /// One of the host's own addresses and not allowed by the operator.
    HostAddress,
    /// A `denyOut` CIDR or IP covers it.
    DenyRule,
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refused::Internal(range) => write!(f, "internal address ({range})"),
            Refused::HostAddress => f.write_str("an address of the host"),
            Refused::DenyRule => f.write_str("denied by the sandbox's denyOut"),
        }
    }
}

/// The outcome for one destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Let it through.
    Allow(Allowed),
    /// Refuse it.
    Refuse(Refused),
    /// Denied by address, but an `allowOut` domain may let it through: hand the
    /// connection to the domain proxy, which checks the name it carries.
    CheckDomain,
}

/// Decides what happens to traffic to `dest` under `rules` (see the module docs for the
/// order).
pub fn decide(dest: Destination, rules: &EgressRules, env: &Environment<'_>) -> Verdict {
    let ip = canonical(dest.ip);
    if dest.port == 53
        && matches!(dest.proto, Proto::Tcp | Proto::Udp)
        && env.resolvers.iter().any(|r| canonical(*r) == ip)
    {
        return Verdict::Allow(Allowed::Dns);
    }
    if let Some(refused) = internal(ip, env) {
        return Verdict::Refuse(refused);
    }
    if rules.allow_cidrs.iter().any(|c| c.contains(ip)) {
        return Verdict::Allow(Allowed::AllowRule);
    }
    if rules.deny.iter().any(|c| c.contains(ip)) {
        if dest.proto == Proto::Tcp
            && DOMAIN_PORTS.contains(&dest.port)
            && !rules.allow_domains.is_empty()
        {
            return Verdict::CheckDomain;
        }
        return Verdict::Refuse(Refused::DenyRule);
    }
    Verdict::Allow(Allowed::NotDenied)
}

/// Why `ip` is internal (refused whatever the sandbox's rules say), unless the operator
/// allows it; `None` when it is not.
pub fn internal(ip: IpAddr, env: &Environment<'_>) -> Option<Refused> {
    let ip = canonical(ip);
    let refused = if let Some(range) = internal_range(ip) {
        Refused::Internal(range)
    } else if env.host_addrs.iter().any(|h| canonical(*h) == ip) {
        Refused::HostAddress
    } else {
        return None;
    };
    if env.operator_allow.iter().any(|c| c.contains(ip)) {
        None
    } else {
        Some(refused)
    }
}

/// Built-in internal IPv4 ranges: never reachable unless the operator allows them.
const INTERNAL_V4: &[([u8; 4], u8, &str)] = &[
    ([0, 0, 0, 0], 8, "0.0.0.0/8, this host"),
    ([10, 0, 0, 0], 8, "10.0.0.0/8, private"),
    ([100, 64, 0, 0], 10, "100.64.0.0/10, carrier-grade NAT"),
    ([127, 0, 0, 0], 8, "127.0.0.0/8, loopback"),
    (
        [169, 254, 0, 0],
        16,
        "169.254.0.0/16, link-local and cloud metadata",
    ),
    ([172, 16, 0, 0], 12, "172.16.0.0/12, private"),
    (
        [192, 0, 0, 0],
        24,
        "192.0.0.0/24, IETF protocol assignments",
    ),
    ([192, 168, 0, 0], 16, "192.168.0.0/16, private"),
    ([198, 18, 0, 0], 15, "198.18.0.0/15, benchmarking"),
    ([224, 0, 0, 0], 4, "224.0.0.0/4, multicast"),
    ([240, 0, 0, 0], 4, "240.0.0.0/4, reserved and broadcast"),
];

/// Built-in internal IPv6 ranges (IPv4-mapped addresses are checked as IPv4).
const INTERNAL_V6: &[(u128, u8, &str)] = &[
    (0, 96, "::/96, unspecified, loopback and IPv4-compatible"),
    (
        0x0064_ff9b_0001 << 80,
        48,
        "64:ff9b:1::/48, local-use NAT64",
    ),
    (0xfc00 << 112, 7, "fc00::/7, unique local"),
    (0xfe80 << 112, 10, "fe80::/10, link-local"),
    (0xfec0 << 112, 10, "fec0::/10, site-local"),
    (0xff00 << 112, 8, "ff00::/8, multicast"),
];

/// The NAT64 well-known prefix `64:ff9b::/96` and 6to4 `2002::/16` carry an IPv4
/// address; an internal one makes the IPv6 address internal too.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let bits = u128::from(ip);
    if bits >> 32 == 0x0064_ff9b_u128 << 64 {
        return Some(Ipv4Addr::from(bits as u32));
    }
    if bits >> 112 == 0x2002 {
        return Some(Ipv4Addr::from((bits >> 80) as u32));
    }
    None
}

/// The built-in internal range `ip` is in.
pub fn internal_range(ip: IpAddr) -> Option<&'static str> {
    match canonical(ip) {
        IpAddr::V4(v4) => INTERNAL_V4.iter().find_map(|(net, prefix, name)| {
            let net = u32::from(Ipv4Addr::from(*net));
            (u32::from(v4) & mask_v4(*prefix) == net).then_some(*name)
        }),
        IpAddr::V6(v6) => INTERNAL_V6
            .iter()
            .find_map(|(net, prefix, name)| {
                (u128::from(v6) & mask_v6(*prefix) == *net).then_some(*name)
            })
            .or_else(|| {
                embedded_v4(v6)
                    .and_then(|v4| internal_range(IpAddr::V4(v4)))
                    .map(|_| "an IPv6 address embedding an internal IPv4 address")
            }),
    }
}

#[cfg(test)]
mod tests {
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
        let err =
            EgressRules::parse(&[], &strings(&["10.0.0.0/8", "example.com"]), "").unwrap_err();
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
}
