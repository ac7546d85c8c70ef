//! Who the client is, for per-client budgets.
//!
//! The client is the connection's peer, unless the peer is one of the proxies listed in
//! `TRUSTED_PROXIES`: then `X-Forwarded-For` is read from the right (each proxy appends the
//! address it received the request from), trusted proxies are skipped, and the first address
//! that is not one of them is the client. Everything left of that address was written by the
//! client itself and is never believed; a client cannot choose its budget by writing addresses
//! of its own.
//!
//! Budgets are per IPv4 address and per IPv6 /64: one IPv6 subscriber or host usually holds a
//! whole /64, so keying by /128 would hand it 2^64 budgets. IPv4-mapped IPv6 addresses
//! (`::ffff:192.0.2.1`, what a dual-stack socket reports for IPv4 peers) count as IPv4.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use axum::{extract::ConnectInfo, http::request::Parts};
use ipnet::IpNet;

/// The client address of a request (`None` only without connection info, as in router tests).
pub fn client_ip(parts: &Parts, trusted_proxies: &[IpNet]) -> Option<IpAddr> {
    let ConnectInfo(peer) = parts.extensions.get::<ConnectInfo<SocketAddr>>()?;
    let forwarded: Vec<&str> = parts
        .headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .collect();
    Some(resolve(peer.ip(), &forwarded, trusted_proxies))
}

/// The client behind `peer`, given the `X-Forwarded-For` entries in order (leftmost first).
pub fn resolve(peer: IpAddr, forwarded_for: &[&str], trusted_proxies: &[IpNet]) -> IpAddr {
    let trusted = |ip: IpAddr| trusted_proxies.iter().any(|net| net.contains(&ip));
    let mut client = peer.to_canonical();
    if !trusted(client) {
        return client;
    }
    for entry in forwarded_for.iter().rev() {
        // Nothing a trusted proxy writes is unreadable: the client wrote it, and the last
        // address read (a trusted host next to the client) is the best answer there is.
        let Some(ip) = parse_entry(entry) else {
            break;
        };
        client = ip;
        if !trusted(ip) {
            break;
        }
    }
    client
}

/// One `X-Forwarded-For` entry: an address, possibly with a port or in brackets.
fn parse_entry(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim();
    entry
        .parse::<IpAddr>()
        .or_else(|_| entry.parse::<SocketAddr>().map(|s| s.ip()))
        .or_else(|_| {
            entry
                .strip_prefix('[')
                .and_then(|e| e.strip_suffix(']'))
                .unwrap_or(entry)
                .parse::<IpAddr>()
        })
        .ok()
        .map(|ip| ip.to_canonical())
}

/// The budget key of a client address: `ip:<IPv4>` or `ip:<IPv6 /64 network>`.
pub fn budget_key(ip: Option<IpAddr>) -> String {
    match ip.map(|ip| ip.to_canonical()) {
        Some(IpAddr::V4(v4)) => format!("ip:{v4}"),
        Some(IpAddr::V6(v6)) => {
            let network = Ipv6Addr::from(u128::from(v6) & !(u128::from(u64::MAX)));
            format!("ip:{network}/64")
        }
        None => "ip:unknown".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|n| n.parse().unwrap()).collect()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn forwarded_for_is_ignored_unless_the_peer_is_a_trusted_proxy() {
        let trusted = nets(&["10.0.0.0/8"]);
        let client = resolve(ip("198.51.100.7"), &["203.0.113.1"], &trusted);
        assert_eq!(client, ip("198.51.100.7"));
        assert_eq!(
            resolve(ip("10.0.0.2"), &["203.0.113.1"], &[]),
            ip("10.0.0.2")
        );
    }

    #[test]
    fn the_rightmost_untrusted_address_is_the_client() {
        let trusted = nets(&["10.0.0.0/8", "192.168.1.1/32"]);
        // The client wrote "1.1.1.1, 2.2.2.2"; the edge proxy appended the client's address,
        // the inner proxy the edge proxy's.
        let forwarded = ["1.1.1.1", " 2.2.2.2", " 203.0.113.9", " 192.168.1.1"];
        assert_eq!(
            resolve(ip("10.1.2.3"), &forwarded, &trusted),
            ip("203.0.113.9")
        );
        // Only trusted hosts: the one nearest the client.
        assert_eq!(
            resolve(ip("10.1.2.3"), &["10.9.9.9", "192.168.1.1"], &trusted),
            ip("10.9.9.9")
        );
        // Garbage is never the client.
        assert_eq!(
            resolve(ip("10.1.2.3"), &["nonsense", "10.9.9.9"], &trusted),
            ip("10.9.9.9")
        );
        // No header: the proxy itself.
        assert_eq!(resolve(ip("10.1.2.3"), &[], &trusted), ip("10.1.2.3"));
    }

    #[test]
    fn entries_may_carry_ports_brackets_and_mapped_addresses() {
        let trusted = nets(&["127.0.0.1/32"]);
        let peer = ip("::ffff:127.0.0.1");
        assert_eq!(
            resolve(peer, &["203.0.113.9:4711"], &trusted),
            ip("203.0.113.9")
        );
        assert_eq!(
            resolve(peer, &["[2001:db8::1]:443"], &trusted),
            ip("2001:db8::1")
        );
        assert_eq!(
            resolve(peer, &["[2001:db8::2]"], &trusted),
            ip("2001:db8::2")
        );
        assert_eq!(
            resolve(peer, &["::ffff:203.0.113.9"], &trusted),
            ip("203.0.113.9")
        );
    }

    #[test]
    fn ipv6_clients_share_a_budget_per_64_and_mapped_ipv4_is_ipv4() {
        let key = |s: &str| budget_key(Some(ip(s)));
        assert_eq!(key("2001:db8:1:2::1"), "ip:2001:db8:1:2::/64");
        assert_eq!(
            key("2001:db8:1:2::1"),
            key("2001:db8:1:2:ffff:eeee:dddd:cccc")
        );
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
        assert_eq!(key("::ffff:203.0.113.9"), "ip:203.0.113.9");
        assert_eq!(key("203.0.113.9"), "ip:203.0.113.9");
        assert_eq!(budget_key(None), "ip:unknown");
    }
}
