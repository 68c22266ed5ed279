//! `allowed_outbound_hosts`: where a component may connect, Spin-style.
//!
//! This module owns the entry syntax, its parsing into an [`AllowedHosts`]
//! list (done when the manifest is validated, and again when a version is
//! loaded) and the two checks the runtime asks of it: may this outgoing HTTP
//! request go out ([`AllowedHosts::allows_http`]), may this socket connect
//! ([`AllowedHosts::allows_socket`]).
//!
//! An entry is `[scheme://]host[:port]`:
//! - `scheme`: `http`, `https`, another name, or `*`. Without one, the entry
//!   matches any scheme, raw sockets included. An entry with a scheme other
//!   than `*` never matches a raw socket, whose protocol the host cannot see.
//! - `host`: a name (`api.example.com`), `*.suffix` (any name under it, not
//!   the suffix itself), `*`, an IP (`127.0.0.1`, `[::1]`) or a CIDR range
//!   (`10.0.0.0/8`, `[fd00::/8]`).
//! - `port`: a number or `*`; without one, 80 for `http`, 443 for `https`,
//!   and an error for anything else.
//!
//! Socket checks see only the IP the guest connects to, so a name entry
//! helps HTTP requests (which the host resolves itself), never sockets.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

/// The complaint about an entry that is more than an origin.
const PLAIN: &str = "must be `[scheme://]host[:port]`, without user, path or query";

/// A parsed `allowed_outbound_hosts` list. Empty: nothing is allowed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowedHosts {
    entries: Vec<AllowedHost>,
}

/// One entry of the list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedHost {
    /// `None`: any scheme, sockets included.
    scheme: Option<String>,
    host: HostPattern,
    port: Option<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostPattern {
    Any,
    /// Lower case, no trailing dot.
    Name(String),
    /// `*.example.com` kept as `.example.com`.
    Suffix(String),
    /// An address and a prefix length (32 or 128 for a single address).
    Net(IpAddr, u8),
}

impl AllowedHosts {
    /// Parses every entry; each problem names `field[i]`, e.g.
    /// `components.web.allowed_outbound_hosts[2]`.
    pub fn parse(field: &str, entries: &[String]) -> Result<AllowedHosts, Vec<String>> {
        let mut parsed = Vec::new();
        let mut problems = Vec::new();
        for (i, entry) in entries.iter().enumerate() {
            match AllowedHost::parse(entry) {
                Ok(host) => parsed.push(host),
                Err(why) => problems.push(format!("{field}[{i}]: {entry:?} {why}")),
            }
        }
        if problems.is_empty() {
            Ok(AllowedHosts { entries: parsed })
        } else {
            Err(problems)
        }
    }

    /// Whether nothing at all is allowed.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether an HTTP request to `scheme://host:port` may go out. `host` is
    /// the URI's host: a name, or an IP literal (IPv6 with or without brackets).
    pub fn allows_http(&self, scheme: &str, host: &str, port: u16) -> bool {
        let bare = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
        let ip = bare.parse::<IpAddr>().ok();
        let name = bare.trim_end_matches('.').to_ascii_lowercase();
        self.entries.iter().any(|entry| {
            entry.scheme.as_deref().is_none_or(|s| s.eq_ignore_ascii_case(scheme))
                && entry.port.is_none_or(|p| p == port)
                && match ip {
                    Some(ip) => entry.host.matches_ip(ip),
                    None => entry.host.matches_name(&name),
                }
        })
    }

    /// The entries of `wanted` that no entry of this list covers: what a
    /// manifest asks for beyond a host's policy.
    pub fn uncovered<'a>(&self, wanted: &'a AllowedHosts) -> Vec<&'a AllowedHost> {
        wanted
            .entries
            .iter()
            .filter(|w| !self.entries.iter().any(|mine| mine.covers(w)))
            .collect()
    }

    /// Whether a raw socket may connect (or send) to `addr`. Only entries
    /// without a scheme (or with `*`) count, and only by IP.
    pub fn allows_socket(&self, addr: SocketAddr) -> bool {
        self.entries.iter().any(|entry| {
            entry.scheme.is_none() && entry.port.is_none_or(|p| p == addr.port()) && entry.host.matches_ip(addr.ip())
        })
    }
}

impl AllowedHost {
    /// Whether every destination `other` allows, this one allows too.
    fn covers(&self, other: &AllowedHost) -> bool {
        let scheme = match (&self.scheme, &other.scheme) {
            (None, _) => true,
            (Some(mine), Some(theirs)) => mine == theirs,
            (Some(_), None) => false,
        };
        let port = self.port.is_none() || self.port == other.port;
        scheme && port && self.host.covers(&other.host)
    }

    /// Parses one entry; the error says what is wrong with it.
    fn parse(entry: &str) -> Result<AllowedHost, String> {
        let entry = entry.trim();
        if entry.is_empty() {
            return Err("is empty".into());
        }
        let (scheme, rest) = match entry.split_once("://") {
            Some((scheme, rest)) => (Some(parse_scheme(scheme)?), rest),
            None => (None, entry),
        };
        if rest.contains(['?', '#', '@']) || rest.ends_with('/') {
            return Err(PLAIN.into());
        }
        let (host, port) = split_host_port(rest)?;
        let host = HostPattern::parse(host)?;
        let port = match port {
            Some("*") => None,
            Some(port) => Some(
                port.parse::<u16>()
                    .ok()
                    .filter(|p| *p != 0)
                    .ok_or_else(|| format!("has port {port:?}; use 1-65535 or `*`"))?,
            ),
            None => match scheme.as_deref() {
                Some("http") => Some(80),
                Some("https") => Some(443),
                _ => return Err("needs a port (a number, or `*` for any)".into()),
            },
        };
        // `*` as a scheme is the same as no scheme.
        let scheme = scheme.filter(|s| s != "*");
        Ok(AllowedHost { scheme, host, port })
    }
}

fn parse_scheme(scheme: &str) -> Result<String, String> {
    let valid = scheme == "*"
        || (scheme.starts_with(|c: char| c.is_ascii_alphabetic())
            && scheme.chars().all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c)));
    if valid {
        Ok(scheme.to_ascii_lowercase())
    } else {
        Err(format!("has scheme {scheme:?}; use a name like `https`, or `*`"))
    }
}

/// `host[:port]`, with IPv6 (and IPv6 ranges) in brackets.
fn split_host_port(rest: &str) -> Result<(&str, Option<&str>), String> {
    if let Some(inner) = rest.strip_prefix('[') {
        let (host, after) = inner
            .split_once(']')
            .ok_or_else(|| "has `[` without a closing `]`".to_string())?;
        return match after {
            "" => Ok((host, None)),
            _ => match after.strip_prefix(':') {
                Some(port) => Ok((host, Some(port))),
                None => Err(format!("has {after:?} after `]`; expected `:port`")),
            },
        };
    }
    match rest.split_once(':') {
        Some((_, port)) if port.contains(':') => Err("has an IPv6 address; write it in brackets: `[::1]:443`".into()),
        Some((host, port)) => Ok((host, Some(port))),
        None => Ok((rest, None)),
    }
}

impl HostPattern {
    fn parse(host: &str) -> Result<HostPattern, String> {
        if host == "*" {
            return Ok(HostPattern::Any);
        }
        if let Some((ip, bits)) = host.split_once('/') {
            if !ip.bytes().all(|b| b.is_ascii_hexdigit() || b == b'.' || b == b':') {
                return Err(PLAIN.into());
            }
            let ip: IpAddr = ip
                .parse()
                .map_err(|_| format!("has {host:?}, which is not a CIDR range like `10.0.0.0/8`"))?;
            let max = if ip.is_ipv4() { 32 } else { 128 };
            let bits = bits
                .parse::<u8>()
                .ok()
                .filter(|b| *b <= max)
                .ok_or_else(|| format!("has prefix length {bits:?}; use 0-{max}"))?;
            // `::ffff:a.b.c.d/104` is the IPv4 range `a.b.c.d/8`.
            return Ok(match canonical(ip) {
                IpAddr::V4(v4) if ip.is_ipv6() && bits >= 96 => HostPattern::Net(IpAddr::V4(v4), bits - 96),
                _ => HostPattern::Net(ip, bits),
            });
        }
        if let Ok(ip) = host.parse::<IpAddr>() {
            let ip = canonical(ip);
            return Ok(HostPattern::Net(ip, if ip.is_ipv4() { 32 } else { 128 }));
        }
        if let Some(suffix) = host.strip_prefix("*.") {
            return if is_dns_name(suffix) {
                Ok(HostPattern::Suffix(format!(".{}", suffix.to_ascii_lowercase())))
            } else {
                Err(format!("has {host:?}; `*.` must be followed by a host name"))
            };
        }
        if is_dns_name(host) && !host.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
            Ok(HostPattern::Name(host.trim_end_matches('.').to_ascii_lowercase()))
        } else {
            Err(format!(
                "has host {host:?}; use a name, `*.name`, `*`, an IP or a CIDR range"
            ))
        }
    }

    /// Whether every host `other` matches, this pattern matches too.
    fn covers(&self, other: &HostPattern) -> bool {
        match (self, other) {
            (HostPattern::Any, _) => true,
            (_, HostPattern::Any) => false,
            (HostPattern::Name(mine), HostPattern::Name(theirs)) => mine == theirs,
            (HostPattern::Suffix(_), HostPattern::Name(name)) => self.matches_name(name),
            (HostPattern::Suffix(mine), HostPattern::Suffix(theirs)) => theirs.ends_with(mine.as_str()),
            (HostPattern::Net(net, bits), HostPattern::Net(ip, wider)) => wider >= bits && in_net(*ip, *net, *bits),
            _ => false,
        }
    }

    fn matches_ip(&self, ip: IpAddr) -> bool {
        match self {
            HostPattern::Any => true,
            HostPattern::Net(net, bits) => in_net(canonical(ip), *net, *bits),
            HostPattern::Name(_) | HostPattern::Suffix(_) => false,
        }
    }

    /// `name` is lower case without a trailing dot.
    fn matches_name(&self, name: &str) -> bool {
        match self {
            HostPattern::Any => true,
            HostPattern::Name(n) => n == name,
            HostPattern::Suffix(suffix) => name.len() > suffix.len() && name.ends_with(suffix.as_str()),
            HostPattern::Net(..) => false,
        }
    }
}

/// An IPv4-mapped IPv6 address as the IPv4 address it is.
fn canonical(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}

fn in_net(ip: IpAddr, net: IpAddr, bits: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(ip), IpAddr::V4(net)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(bits)).unwrap_or(0);
            u32::from(ip) & mask == u32::from(net) & mask
        }
        (IpAddr::V6(ip), IpAddr::V6(net)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(bits)).unwrap_or(0);
            u128::from(ip) & mask == u128::from(net) & mask
        }
        _ => false,
    }
}

/// Dot-separated labels of letters, digits and `-`, none empty (one
/// trailing dot allowed), at most 253 bytes.
fn is_dns_name(s: &str) -> bool {
    let s = s.strip_suffix('.').unwrap_or(s);
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

impl fmt::Display for AllowedHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://", self.scheme.as_deref().unwrap_or("*"))?;
        match &self.host {
            HostPattern::Any => write!(f, "*")?,
            HostPattern::Name(name) => write!(f, "{name}")?,
            HostPattern::Suffix(suffix) => write!(f, "*{suffix}")?,
            HostPattern::Net(IpAddr::V4(ip), 32) => write!(f, "{ip}")?,
            HostPattern::Net(IpAddr::V6(ip), 128) => write!(f, "[{ip}]")?,
            HostPattern::Net(IpAddr::V4(ip), bits) => write!(f, "{ip}/{bits}")?,
            HostPattern::Net(IpAddr::V6(ip), bits) => write!(f, "[{ip}/{bits}]")?,
        }
        match self.port {
            Some(port) => write!(f, ":{port}"),
            None => write!(f, ":*"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(entries: &[&str]) -> AllowedHosts {
        let entries: Vec<String> = entries.iter().map(|s| s.to_string()).collect();
        AllowedHosts::parse("f", &entries).expect("valid entries")
    }

    fn err(entry: &str) -> String {
        AllowedHosts::parse("f", &[entry.to_string()]).unwrap_err().join("\n")
    }

    fn sock(s: &str) -> SocketAddr {
        s.parse().expect("socket address")
    }

    #[test]
    fn empty_allows_nothing() {
        let none = list(&[]);
        assert!(none.is_empty());
        assert!(!none.allows_http("https", "example.com", 443));
        assert!(!none.allows_socket(sock("127.0.0.1:80")));
    }

    #[test]
    fn scheme_host_and_default_port() {
        let l = list(&["https://api.example.com"]);
        assert!(l.allows_http("https", "api.example.com", 443));
        assert!(l.allows_http("https", "API.Example.com.", 443));
        assert!(!l.allows_http("http", "api.example.com", 443));
        assert!(!l.allows_http("https", "api.example.com", 8443));
        assert!(!l.allows_http("https", "evil.api.example.com", 443));
        assert!(!l.allows_socket(sock("93.184.216.34:443")));
        assert!(list(&["http://x.io"]).allows_http("http", "x.io", 80));
    }

    #[test]
    fn wildcards() {
        let any = list(&["*://*:*"]);
        assert!(any.allows_http("http", "anything", 1234));
        assert!(any.allows_socket(sock("[::1]:9")));
        let sub = list(&["https://*.example.com"]);
        assert!(sub.allows_http("https", "a.b.example.com", 443));
        assert!(!sub.allows_http("https", "example.com", 443));
        assert!(!sub.allows_http("https", "badexample.com", 443));
        let ports = list(&["http://localhost:*"]);
        assert!(ports.allows_http("http", "localhost", 1));
    }

    #[test]
    fn ips_and_ranges_for_sockets_and_http() {
        let l = list(&[
            "127.0.0.1:5432",
            "10.0.0.0/8:*",
            "[fd00::/8]:443",
            "http://127.0.0.1:8080",
        ]);
        assert!(l.allows_socket(sock("127.0.0.1:5432")));
        assert!(l.allows_socket(sock("[::ffff:127.0.0.1]:5432")));
        assert!(!l.allows_socket(sock("127.0.0.1:5433")));
        assert!(l.allows_socket(sock("10.200.3.4:1")));
        assert!(!l.allows_socket(sock("11.0.0.1:1")));
        assert!(l.allows_socket(sock("[fd12::1]:443")));
        assert!(!l.allows_socket(sock("[fe80::1]:443")));
        // An http entry does not open a raw socket.
        assert!(!l.allows_socket(sock("127.0.0.1:8080")));
        assert!(l.allows_http("http", "127.0.0.1", 8080));
        assert!(l.allows_http("https", "127.0.0.1", 5432));
        assert!(l.allows_http("http", "[fd00::2]", 443));
        assert!(!l.allows_http("http", "localhost", 8080));
    }

    #[test]
    fn garbage_is_refused_with_the_field() {
        assert!(err("").contains("f[0]: \"\" is empty"), "{}", err(""));
        for (entry, why) in [
            ("api.example.com", "needs a port"),
            ("ftp://files.example.com", "needs a port"),
            ("https://api.example.com/path", "without user, path or query"),
            ("https://user@api.example.com", "without user, path or query"),
            ("ht tp://x.io", "has scheme"),
            ("https://exa mple.com", "has host"),
            ("https://x.io:99999", "has port"),
            ("https://x.io:0", "has port"),
            ("10.0.0.0/33:80", "prefix length"),
            ("10.0.0/8:80", "not a CIDR range"),
            ("::1:80", "brackets"),
            ("[::1:80", "closing"),
            ("https://*.", "`*.` must be followed"),
            ("https://999.1.1.1", "has host"),
        ] {
            let message = err(entry);
            assert!(message.starts_with("f[0]: "), "{message}");
            assert!(message.contains(why), "{entry}: {message}");
        }
    }

    #[test]
    fn a_policy_covers_only_what_it_allows() {
        let policy = list(&["https://*.example.com", "10.0.0.0/8:*", "db.internal:5432"]);
        assert!(
            policy
                .uncovered(&list(&["https://api.example.com", "10.1.2.3:443", "db.internal:5432"]))
                .is_empty()
        );
        for wanted in [
            "http://api.example.com",
            "https://example.com",
            "*://*:*",
            "10.0.0.0/7:80",
            "11.0.0.1:80",
            "db.internal:*",
        ] {
            assert_eq!(
                policy.uncovered(&list(&[wanted])).len(),
                1,
                "{wanted} is more than the policy allows"
            );
        }
    }

    #[test]
    fn display_is_normalised() {
        let l = AllowedHost::parse("HTTPS://Api.Example.com").unwrap();
        assert_eq!(l.to_string(), "https://api.example.com:443");
        assert_eq!(
            AllowedHost::parse("10.0.0.0/8:*").unwrap().to_string(),
            "*://10.0.0.0/8:*"
        );
    }
}
