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

/// One entry of the operator's allow list (`--egress-allow`): an internal range, or one
/// TCP port of it.
///
/// Spelled `CIDR` (`10.1.2.3/32`, `10.0.0.0/8`, `fd00::/8`, an IP alone = one address) or
/// `CIDR:PORT` / `IP:PORT` (`10.77.0.1:8080`, `10.0.0.0/8:443`; IPv6 in brackets:
/// `[fd00::1]:8080`, `[fd00::/8]:443`). With a port, only TCP connections to that port
/// are let through: the rest of the address (its other ports, UDP, ICMP) stays refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct OperatorAllow {
    net: Cidr,
    port: Option<u16>,
}

impl OperatorAllow {
    /// The range.
    pub fn net(&self) -> Cidr {
        self.net
    }

    /// The one TCP port opened, when the entry is port-scoped.
    pub fn port(&self) -> Option<u16> {
        self.port
    }

    /// Whether this entry lets `dest` through the internal refusal.
    pub fn covers(&self, dest: &Destination) -> bool {
        self.net.contains(dest.ip)
            && self
                .port
                .is_none_or(|port| dest.proto == Proto::Tcp && dest.port == port)
    }
}

impl From<Cidr> for OperatorAllow {
    fn from(net: Cidr) -> Self {
        Self { net, port: None }
    }
}

impl fmt::Display for OperatorAllow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.port, self.net.addr()) {
            (None, _) => write!(f, "{}", self.net),
            (Some(port), IpAddr::V4(_)) => write!(f, "{}:{port}", self.net),
            (Some(port), IpAddr::V6(_)) => write!(f, "[{}]:{port}", self.net),
        }
    }
}

impl FromStr for OperatorAllow {
    type Err = CidrError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let port = |p: &str| {
            p.parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| CidrError(format!("port {p:?} must be 1..=65535")))
        };
        if let Some(rest) = s.strip_prefix('[') {
            // `[v6 or v6/prefix]:port`
            let (net, tail) = rest.split_once(']').ok_or_else(|| {
                CidrError(format!("{s:?}: a '[' needs its ']' (e.g. [fd00::1]:8080)"))
            })?;
            let p = tail
                .strip_prefix(':')
                .ok_or_else(|| CidrError(format!("{s:?}: ']' must be followed by :PORT")))?;
            return Ok(Self {
                net: net.parse()?,
                port: Some(port(p)?),
            });
        }
        // IPv4 (with or without prefix) and a port: exactly one ':'. More colons: IPv6.
        if s.matches(':').count() == 1 {
            let (net, p) = s.split_once(':').expect("one colon");
            let net: Cidr = net.parse()?;
            if net.addr().is_ipv4() {
                return Ok(Self {
                    net,
                    port: Some(port(p)?),
                });
            }
        }
        Ok(Self {
            net: s.parse()?,
            port: None,
        })
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
    transforms: transform::TransformRules,
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

    /// These rules with E2B's `network.rules` (per-host request transforms); they never
    /// allow traffic by themselves.
    pub fn with_transforms(mut self, transforms: transform::TransformRules) -> Self {
        self.transforms = transforms;
        self
    }

    /// The per-host request transforms (`network.rules`).
    pub fn transforms(&self) -> &transform::TransformRules {
        &self.transforms
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
    pub operator_allow: &'a [OperatorAllow],
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
    if let Some(refused) = internal(dest, env) {
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

/// Why `dest` is internal (refused whatever the sandbox's rules say), unless the
/// operator allows it (its address, or with a port-scoped entry that TCP port); `None`
/// when it is not.
pub fn internal(dest: Destination, env: &Environment<'_>) -> Option<Refused> {
    let ip = canonical(dest.ip);
    let refused = if let Some(range) = internal_range(ip) {
        Refused::Internal(range)
    } else if env.host_addrs.iter().any(|h| canonical(*h) == ip) {
        Refused::HostAddress
    } else {
        return None;
    };
    if env.operator_allow.iter().any(|c| c.covers(&dest)) {
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

pub(crate) mod transform;

#[cfg(test)]
mod tests;
