//! Which addresses a webhook delivery may reach: the SSRF guard's rules, as pure functions.
//!
//! A webhook URL is chosen by a user of the api, and the request is sent from inside our network,
//! so a URL pointing at `127.0.0.1`, `10.0.0.5` or `169.254.169.254` would turn the worker into a
//! proxy to our own services and the cloud metadata endpoint. Only public unicast addresses are
//! reached, unless an operator allow-lists a network (`WEBHOOK_ALLOWLIST`, for local development
//! and tests).
//!
//! The rules are applied where the address is final: on the resolved addresses at connect time
//! (the worker's resolver), so a DNS answer cannot swap in a private address after a check; and on
//! IP-literal hosts before sending, because the HTTP client connects to those without resolving.
//! Odd literal forms (`http://2130706433/`, `http://0x7f000001/`, `http://0177.0.0.1/`) are
//! normalised by the URL parser to the dotted address they mean, and IPv4 addresses embedded in
//! IPv6 (`::ffff:127.0.0.1`, NAT64, 6to4) are judged as the IPv4 address they reach.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use url::{Host, Url};

/// IPv4 networks that are not publicly routable unicast (IANA special-purpose registry).
const BLOCKED_V4: &[(Ipv4Addr, u8)] = &[
    (Ipv4Addr::new(0, 0, 0, 0), 8), // "this network", including 0.0.0.0 (reaches the host itself)
    (Ipv4Addr::new(10, 0, 0, 0), 8), // private
    (Ipv4Addr::new(100, 64, 0, 0), 10), // carrier-grade NAT
    (Ipv4Addr::new(127, 0, 0, 0), 8), // loopback
    (Ipv4Addr::new(169, 254, 0, 0), 16), // link-local, cloud metadata endpoints
    (Ipv4Addr::new(172, 16, 0, 0), 12), // private
    (Ipv4Addr::new(192, 0, 0, 0), 24), // IETF protocol assignments
    (Ipv4Addr::new(192, 0, 2, 0), 24), // documentation
    (Ipv4Addr::new(192, 88, 99, 0), 24), // 6to4 relay anycast (deprecated)
    (Ipv4Addr::new(192, 168, 0, 0), 16), // private
    (Ipv4Addr::new(198, 18, 0, 0), 15), // benchmarking
    (Ipv4Addr::new(198, 51, 100, 0), 24), // documentation
    (Ipv4Addr::new(203, 0, 113, 0), 24), // documentation
    (Ipv4Addr::new(224, 0, 0, 0), 4), // multicast
    (Ipv4Addr::new(240, 0, 0, 0), 4), // reserved, including the broadcast address
];

/// Special ranges inside 2000::/3, the only IPv6 block handed out as global unicast.
const BLOCKED_V6_GLOBAL: &[(Ipv6Addr, u8)] = &[
    (Ipv6Addr::new(0x2001, 0, 0, 0, 0, 0, 0, 0), 23), // IETF protocol assignments, Teredo
    (Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0), 32), // documentation
    (Ipv6Addr::new(0x3fff, 0, 0, 0, 0, 0, 0, 0), 20), // documentation
];

/// NAT64 (RFC 6052): `64:ff9b::a.b.c.d` reaches the IPv4 address a.b.c.d.
const NAT64: (Ipv6Addr, u8) = (Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, 0, 0), 96);
/// 6to4 (RFC 3056): `2002:AABB:CCDD::/48` reaches the IPv4 address AA.BB.CC.DD.
const SIX_TO_FOUR: (Ipv6Addr, u8) = (Ipv6Addr::new(0x2002, 0, 0, 0, 0, 0, 0, 0), 16);

fn v4_in(ip: Ipv4Addr, &(network, prefix): &(Ipv4Addr, u8)) -> bool {
    Ipv4Net::new(network, prefix).is_ok_and(|net| net.contains(&ip))
}

fn v6_in(ip: Ipv6Addr, &(network, prefix): &(Ipv6Addr, u8)) -> bool {
    Ipv6Net::new(network, prefix).is_ok_and(|net| net.contains(&ip))
}

/// The address as the network sees it: an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) is the
/// IPv4 address a.b.c.d (a dual-stack socket connects to exactly that).
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Whether `ip` is publicly routable unicast: not loopback, private, link-local, CGNAT,
/// multicast, broadcast, unspecified, documentation or otherwise reserved, in either family,
/// nor an IPv6 address that embeds such an IPv4 address.
pub fn is_public(ip: IpAddr) -> bool {
    match canonical(ip) {
        IpAddr::V4(v4) => !BLOCKED_V4.iter().any(|range| v4_in(v4, range)),
        IpAddr::V6(v6) => {
            if v6_in(v6, &NAT64) {
                let [.., a, b, c, d] = v6.octets();
                return is_public(IpAddr::V4(Ipv4Addr::new(a, b, c, d)));
            }
            if v6_in(v6, &SIX_TO_FOUR) {
                let [_, _, a, b, c, d, ..] = v6.octets();
                return is_public(IpAddr::V4(Ipv4Addr::new(a, b, c, d)));
            }
            // Everything outside 2000::/3 is special: ::, ::1, IPv4-compatible ::/96,
            // unique local fc00::/7, link-local fe80::/10, site-local fec0::/10, multicast ff00::/8,
            // discard 100::/64, local-use NAT64 64:ff9b:1::/48.
            let global_unicast = v6.segments()[0] & 0xe000 == 0x2000;
            global_unicast && !BLOCKED_V6_GLOBAL.iter().any(|range| v6_in(v6, range))
        }
    }
}

/// A URL's host, as far as the guard can judge it before connecting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostCheck {
    /// An IP literal that may be reached.
    Permitted(IpAddr),
    /// A name: its addresses are checked when it is resolved, at connect time.
    ResolveAtConnect(String),
}

/// Why a delivery was refused before any connection was made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// The URL has no host (cannot happen for http(s) URLs the api accepted).
    #[error("the URL has no host")]
    NoHost,
    /// The host is, or resolves only to, addresses that are not public and not allow-listed.
    #[error(
        "{host} resolves to no permitted address (refused: {addresses}); private, loopback and \
         other non-public networks are reached only when listed in WEBHOOK_ALLOWLIST"
    )]
    Blocked {
        /// The host as written in the URL.
        host: String,
        /// The addresses that were refused, comma-separated.
        addresses: String,
    },
}

impl Refused {
    /// A refusal of `host` for `addresses`.
    pub fn blocked(host: impl Into<String>, addresses: &[IpAddr]) -> Self {
        Self::Blocked {
            host: host.into(),
            addresses: addresses
                .iter()
                .map(IpAddr::to_string)
                .collect::<Vec<_>>()
                .join(", "),
        }
    }
}

/// The rules in force: public addresses, plus whatever networks the operator allow-listed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AddressPolicy {
    allowlist: Vec<IpNet>,
}

impl AddressPolicy {
    /// Public addresses plus `allowlist` (`WEBHOOK_ALLOWLIST`).
    pub fn new(allowlist: Vec<IpNet>) -> Self {
        Self { allowlist }
    }

    /// Whether a delivery may connect to `ip`.
    pub fn permits(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.allowlist.iter().any(|net| net.contains(&ip)) || is_public(ip)
    }

    /// Judges the host of `url` before sending: IP literals are decided here (the HTTP client
    /// connects to them without asking the resolver); names are left to the resolver.
    pub fn check_url(&self, url: &Url) -> Result<HostCheck, Refused> {
        let ip = match url.host().ok_or(Refused::NoHost)? {
            Host::Ipv4(v4) => IpAddr::V4(v4),
            Host::Ipv6(v6) => IpAddr::V6(v6),
            Host::Domain(name) => {
                // The URL parser turns every IPv4 form into `Host::Ipv4` for http(s), but the
                // connector would also take a name that parses as an address as that address:
                // judge it as one, whatever the parser did.
                match name
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .parse::<IpAddr>()
                {
                    Ok(ip) => ip,
                    Err(_) => return Ok(HostCheck::ResolveAtConnect(name.to_owned())),
                }
            }
        };
        if self.permits(ip) {
            Ok(HostCheck::Permitted(ip))
        } else {
            Err(Refused::blocked(url.host_str().unwrap_or_default(), &[ip]))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn special_ipv4_ranges_are_not_public() {
        for blocked in [
            "0.0.0.0",
            "0.1.2.3",
            "10.0.0.1",
            "10.255.255.255",
            "100.64.0.1",
            "100.127.255.254",
            "127.0.0.1",
            "127.255.0.1",
            "169.254.169.254",
            "172.16.0.1",
            "172.31.255.255",
            "192.0.0.8",
            "192.0.2.1",
            "192.168.1.1",
            "198.18.0.1",
            "198.51.100.7",
            "203.0.113.9",
            "224.0.0.1",
            "239.255.255.250",
            "240.0.0.1",
            "255.255.255.255",
        ] {
            assert!(!is_public(ip(blocked)), "{blocked} should be blocked");
        }
        for public in [
            "1.1.1.1",
            "8.8.8.8",
            "93.184.216.34",
            "100.63.255.255",
            "100.128.0.1",
            "172.32.0.1",
            "11.0.0.1",
        ] {
            assert!(is_public(ip(public)), "{public} should be public");
        }
    }

    #[test]
    fn special_ipv6_ranges_are_not_public() {
        for blocked in [
            "::",
            "::1",
            "::127.0.0.1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::ffff:169.254.169.254",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "fec0::1",
            "ff02::1",
            "100::1",
            "2001:db8::1",
            "2001::1",
            "64:ff9b::7f00:1",
            "64:ff9b::a00:1",
            "64:ff9b:1::1",
            "2002:7f00:1::1",
            "2002:a9fe:a9fe::1",
            "3fff::1",
        ] {
            assert!(!is_public(ip(blocked)), "{blocked} should be blocked");
        }
        for public in [
            "2606:4700:4700::1111",
            "2a00:1450:4001::200e",
            "::ffff:1.1.1.1",
            "64:ff9b::101:101",
            "2002:101:101::1",
        ] {
            assert!(is_public(ip(public)), "{public} should be public");
        }
    }

    #[test]
    fn odd_literal_forms_are_judged_as_the_address_they_mean() {
        let policy = AddressPolicy::default();
        for url in [
            "http://127.0.0.1/",
            "http://2130706433/",
            "http://0x7f000001/",
            "http://0x7f.0.0.1/",
            "http://0177.0.0.1/",
            "http://017700000001/",
            "http://127.1/",
            "http://127.0.0.1./",
            "http://0.0.0.0/",
            "http://0/",
            "http://[::]/",
            "http://[::1]/",
            "http://[0:0:0:0:0:0:0:1]/",
            "http://[::ffff:127.0.0.1]/",
            "http://[::ffff:7f00:1]/",
            "http://[0:0:0:0:0:ffff:7f00:0001]/",
            "http://[::ffff:a9fe:a9fe]/",
            "http://10.0.0.1:8080/hook",
            "http://169.254.169.254/latest/meta-data/",
            "https://[fd00::1]/",
            "https://[fe80::1]/",
            "http://100.64.1.1/",
            "http://224.0.0.1/",
            "http://255.255.255.255/",
        ] {
            let parsed = Url::parse(url).unwrap();
            assert!(
                matches!(policy.check_url(&parsed), Err(Refused::Blocked { .. })),
                "{url} (parsed host {:?}) should be refused",
                parsed.host()
            );
        }
    }

    #[test]
    fn public_literals_pass_and_names_are_left_to_the_resolver() {
        let policy = AddressPolicy::default();
        assert_eq!(
            policy.check_url(&Url::parse("https://1.1.1.1/hook").unwrap()),
            Ok(HostCheck::Permitted(ip("1.1.1.1")))
        );
        assert_eq!(
            policy.check_url(&Url::parse("https://hooks.example.com/in").unwrap()),
            Ok(HostCheck::ResolveAtConnect("hooks.example.com".into()))
        );
        assert_eq!(
            policy.check_url(&Url::parse("http://localhost:9000/").unwrap()),
            Ok(HostCheck::ResolveAtConnect("localhost".into()))
        );
    }

    #[test]
    fn the_allowlist_opens_exactly_its_networks() {
        let policy = AddressPolicy::new(vec!["127.0.0.0/8".parse().unwrap()]);
        assert!(policy.permits(ip("127.0.0.1")));
        assert!(policy.permits(ip("127.9.9.9")));
        // The mapped form reaches the same address, so the same rule applies.
        assert!(policy.permits(ip("::ffff:127.0.0.1")));
        assert!(!policy.permits(ip("::1")));
        assert!(!policy.permits(ip("10.0.0.1")));
        assert!(!policy.permits(ip("169.254.169.254")));
        assert!(policy.permits(ip("8.8.8.8")));
        assert_eq!(
            policy.check_url(&Url::parse("http://2130706433:8080/").unwrap()),
            Ok(HostCheck::Permitted(ip("127.0.0.1")))
        );
    }
}
