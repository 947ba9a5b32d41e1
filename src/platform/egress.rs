//! The way out of an environment's network: an HTTPS proxy of its own.
//!
//! An environment's namespace has nothing but its services (`network`); an app still has to call
//! a payment provider's API, a carrier's, a search service's. Its forwarder also listens inside
//! the namespace on [`PROXY`] and answers HTTP `CONNECT host:port` (what curl, composer, Guzzle
//! and Magento's HTTP clients send through `https_proxy`, which the environment's processes are
//! given) for the destinations the admin allows (`egress` in `sandbox.json`), connecting from
//! the host. A name is resolved on the host, and reached only at public addresses: a rule for
//! `*:443` never leads to the host's loopback, a private network, the cloud's metadata address
//! (169.254.169.254) or another environment's ports; an address in those ranges is reached only
//! where a rule names it (`10.0.0.7:9200`). The tunnel carries what the client sends (TLS, end
//! to end): the proxy sees the destination, never the content.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Where an environment's processes find their proxy (`https_proxy`), inside its namespace.
pub const PROXY: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 3128);

/// What an environment may reach when its project's policy says nothing: HTTPS anywhere public.
pub const DEFAULT_RULES: &[&str] = &["*:443"];

/// The variables that send an environment's clients through its proxy; its own services (on
/// its loopback) are reached directly.
pub fn variables() -> Vec<(String, String)> {
    let url = format!("http://{PROXY}");
    let direct = "localhost,127.0.0.1,::1".to_owned();
    vec![
        ("https_proxy".into(), url.clone()),
        ("HTTPS_PROXY".into(), url),
        ("no_proxy".into(), direct.clone()),
        ("NO_PROXY".into(), direct),
    ]
}

/// One destination the admin allows: `HOST:PORT`, where HOST is `*` (any public address), a
/// name, `*.example.com` (its subdomains), or an address (reached even if it is not public).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    host: Host,
    port: u16,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Host {
    Any,
    Name(String),
    Subdomains(String),
    Ip(IpAddr),
}

impl Rule {
    pub fn parse(rule: &str) -> Result<Rule, String> {
        let bad = || format!("egress rule `{rule}`: not HOST:PORT (`*:443`, `api.example.com:443`, `10.0.0.7:9200`)");
        let (host, port) = rule.rsplit_once(':').ok_or_else(bad)?;
        let port: u16 = port.parse().ok().filter(|p| *p != 0).ok_or_else(bad)?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let host = if host == "*" {
            Host::Any
        } else if let Ok(ip) = host.parse::<IpAddr>() {
            Host::Ip(ip)
        } else {
            let (wild, name) = match host.strip_prefix("*.") {
                Some(name) => (true, name),
                None => (false, host),
            };
            let name = name.to_ascii_lowercase();
            if !is_name(&name) {
                return Err(bad());
            }
            if wild {
                Host::Subdomains(name)
            } else {
                Host::Name(name)
            }
        };
        Ok(Rule { host, port })
    }
}

/// A DNS name, without a wildcard.
fn is_name(name: &str) -> bool {
    !name.starts_with("*.") && super::routes::is_host_name(name)
}

/// Parses the admin's rules (the policy gives the default's where it names none).
pub fn rules(list: &[String]) -> Result<Vec<Rule>, String> {
    list.iter().map(|r| Rule::parse(r)).collect()
}

/// Whether an address is on the public internet: not the host's loopback, a private or shared
/// network, a link-local address (the cloud's metadata service), nor one that is not an
/// address of anyone (unspecified, multicast, broadcast, documentation).
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || a == 0
                || (a == 192 && b == 0 && v4.octets()[2] == 0) // IETF protocol assignments
                || (a == 100 && (64..128).contains(&b)) // shared address space (carrier NAT)
                || (a == 198 && (18..20).contains(&b)) // benchmarking
                || a >= 240)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = embedded_ipv4(v6) {
                return is_public(IpAddr::V4(v4));
            }
            let seg = v6.segments();
            let first = seg[0];
            // Teredo (2001::/32) reaches IPv4 hosts through relays: not followed.
            if first == 0x2001 && seg[1] == 0 {
                return false;
            }
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00 // unique local
                || (first & 0xffc0) == 0xfe80 // link-local
                || (first & 0xffc0) == 0xfec0 // site-local (deprecated, still routed inside some sites)
                || (first == 0x3fff && (seg[1] & 0xf000) == 0) // documentation (3fff::/20)
                || first == 0x5f00 // segment routing (5f00::/16)
                || (first == 0x2001 && v6.segments()[1] == 0x0db8) // documentation
                || v6 == Ipv6Addr::new(0, 0, 0, 0, 0, 0xffff, 0, 0))
        }
    }
}

/// The IPv4 address an IPv6 address carries to an IPv4 host: mapped (`::ffff:a.b.c.d`),
/// compatible (`::a.b.c.d`), NAT64 (`64:ff9b::/96`, `64:ff9b:1::/48`, where a NAT64 gateway
/// reaches the IPv4 network behind it) and 6to4 (`2002:AABB:CCDD::/16`).
fn embedded_ipv4(v6: Ipv6Addr) -> Option<Ipv4Addr> {
    let seg = v6.segments();
    let o = v6.octets();
    let last = Ipv4Addr::new(o[12], o[13], o[14], o[15]);
    if let Some(v4) = v6.to_ipv4_mapped() {
        return Some(v4);
    }
    if seg[..6].iter().all(|s| *s == 0) && !v6.is_loopback() && !v6.is_unspecified() {
        return Some(last);
    }
    if seg[0] == 0x64 && seg[1] == 0xff9b && (seg[2..6].iter().all(|s| *s == 0) || seg[2] == 1) {
        return Some(last);
    }
    if seg[0] == 0x2002 {
        return Some(Ipv4Addr::new(o[2], o[3], o[4], o[5]));
    }
    None
}

/// The addresses of this host's own interfaces (its public ones too): a service listening on
/// all of them, which a firewall hides from the internet, is not reached from the host itself
/// through the proxy unless a rule names the address.
pub fn own_addresses() -> Vec<IpAddr> {
    let mut out = Vec::new();
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `list` with a linked list that freeifaddrs releases; each
    // sockaddr is read according to its family.
    unsafe {
        if libc::getifaddrs(&mut list) != 0 {
            return out;
        }
        let mut at = list;
        while !at.is_null() {
            let addr = (*at).ifa_addr;
            if !addr.is_null() {
                match (*addr).sa_family as i32 {
                    libc::AF_INET => {
                        let sin = &*(addr as *const libc::sockaddr_in);
                        out.push(IpAddr::V4(Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr))));
                    }
                    libc::AF_INET6 => {
                        let sin6 = &*(addr as *const libc::sockaddr_in6);
                        out.push(IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr)));
                    }
                    _ => {}
                }
            }
            at = (*at).ifa_next;
        }
        libc::freeifaddrs(list);
    }
    out
}

/// What a request asks for, once the rules are applied: where it may connect, or why not.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    /// A name a rule allows: resolved, then reached at its public addresses only.
    Name(String),
    /// An address: reached as it is.
    Address(IpAddr),
}

fn judge(rules: &[Rule], own: &[IpAddr], host: &str, port: u16) -> Result<Verdict, String> {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = host.parse::<IpAddr>() {
        let named = rules.iter().any(|r| r.port == port && r.host == Host::Ip(ip));
        let any = rules.iter().any(|r| r.port == port && r.host == Host::Any);
        return match (named, any && is_public(ip) && !own.contains(&ip)) {
            (true, _) | (_, true) => Ok(Verdict::Address(ip)),
            _ => Err(format!("{host}:{port} is not an address this environment may reach")),
        };
    }
    let name = host.to_ascii_lowercase();
    if !is_name(&name) {
        return Err(format!("`{host}` is not a host name"));
    }
    let allowed = rules.iter().filter(|r| r.port == port).any(|r| match &r.host {
        Host::Any => true,
        Host::Name(n) => *n == name,
        Host::Subdomains(d) => name.strip_suffix(d.as_str()).is_some_and(|rest| rest.ends_with('.')),
        Host::Ip(_) => false,
    });
    if allowed {
        Ok(Verdict::Name(name))
    } else {
        Err(format!("{host}:{port} is not a destination this environment may reach"))
    }
}

/// Answers one client of the proxy: reads its `CONNECT`, and either tunnels it or says why not.
/// `own`: this host's addresses, reached only where a rule names them.
pub async fn serve(mut client: tokio::net::TcpStream, rules: &[Rule], own: &[IpAddr]) {
    let mut head = Vec::with_capacity(512);
    let read = tokio::time::timeout(Duration::from_secs(10), async {
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            if head.len() > 8192 {
                return false;
            }
            match client.read(&mut buf).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
        true
    })
    .await;
    if read != Ok(true) {
        return;
    }
    let end = head.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or(0) + 4;
    let line = String::from_utf8_lossy(&head[..head.iter().position(|&b| b == b'\r').unwrap_or(0)]).into_owned();
    let mut words = line.split(' ');
    let target = match (words.next(), words.next()) {
        (Some("CONNECT"), Some(target)) => target.to_owned(),
        _ => {
            let why = "only HTTPS leaves an environment: through CONNECT (https_proxy)";
            return refuse(&mut client, "405 Method Not Allowed", why).await;
        }
    };
    let Some((host, port)) = target.rsplit_once(':').and_then(|(h, p)| Some((h, p.parse::<u16>().ok()?))) else {
        return refuse(&mut client, "400 Bad Request", "CONNECT HOST:PORT").await;
    };
    let addrs: Vec<SocketAddr> = match judge(rules, own, host, port) {
        Ok(Verdict::Address(ip)) => vec![SocketAddr::new(ip, port)],
        Ok(Verdict::Name(name)) => {
            match tokio::time::timeout(Duration::from_secs(10), tokio::net::lookup_host((name.as_str(), port)))
                .await
                .unwrap_or_else(|_| Err(std::io::Error::other("no answer in 10 s")))
            {
                Ok(found) => {
                    let found: Vec<SocketAddr> = found.collect();
                    let public: Vec<SocketAddr> =
                        found.iter().copied().filter(|a| is_public(a.ip()) && !own.contains(&a.ip())).collect();
                    if public.is_empty() {
                        let why = format!("{name} resolves to no public address ({found:?})");
                        eprintln!("pushgate egress: refused {target}: {why}");
                        return refuse(&mut client, "403 Forbidden", &why).await;
                    }
                    public
                }
                Err(e) => return refuse(&mut client, "502 Bad Gateway", &format!("{name}: {e}")).await,
            }
        }
        Err(why) => {
            eprintln!("pushgate egress: refused {target}: {why}");
            let why = format!("{why} (the admin allows destinations in sandbox.json's `egress`)");
            return refuse(&mut client, "403 Forbidden", &why).await;
        }
    };
    let connect = tokio::time::timeout(Duration::from_secs(10), tokio::net::TcpStream::connect(&addrs[..])).await;
    let mut upstream = match connect {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return refuse(&mut client, "502 Bad Gateway", &format!("{target}: {e}")).await,
        Err(_) => return refuse(&mut client, "504 Gateway Timeout", &format!("{target}: no answer in 10 s")).await,
    };
    if client.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n").await.is_err() {
        return;
    }
    // What the client sent after its request (a TLS hello, sent early) goes first.
    if head.len() > end && upstream.write_all(&head[end..]).await.is_err() {
        return;
    }
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
}

async fn refuse(client: &mut tokio::net::TcpStream, status: &str, why: &str) {
    let body = format!("pushgate: {why}\n");
    let answer = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = client.write_all(answer.as_bytes()).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(list: &[&str]) -> Vec<Rule> {
        list.iter().map(|r| Rule::parse(r).unwrap()).collect()
    }

    #[test]
    fn a_destination_is_reached_where_a_rule_allows_it_and_private_addresses_only_by_name() {
        let r = rules(&["*:443", "*.stripe.com:8443", "search.internal:9200", "10.0.0.7:9200"]);
        let own: Vec<IpAddr> = vec!["203.0.113.9".parse().unwrap()];
        let ok = |host: &str, port| judge(&r, &own, host, port);
        assert_eq!(ok("api.PayPal.com", 443), Ok(Verdict::Name("api.paypal.com".into())));
        assert!(ok("api.paypal.com", 80).is_err(), "another port");
        assert_eq!(ok("api.stripe.com", 8443), Ok(Verdict::Name("api.stripe.com".into())));
        assert!(ok("stripe.com", 8443).is_err() && ok("evilstripe.com", 8443).is_err(), "subdomains only");
        assert!(ok("search.internal", 9200).is_ok());
        assert_eq!(ok("10.0.0.7", 9200), Ok(Verdict::Address("10.0.0.7".parse().unwrap())));
        assert_eq!(ok("93.184.216.34", 443), Ok(Verdict::Address("93.184.216.34".parse().unwrap())));
        for private in ["127.0.0.1", "10.0.0.8", "169.254.169.254", "192.168.1.1", "[::1]", "[fd00::1]", "0.0.0.0"] {
            assert!(ok(private, 443).is_err(), "{private} by `*`");
        }
        assert!(ok("x y", 443).is_err() && ok("a\r\nb", 443).is_err(), "not names");
        let own = vec!["8.8.4.4".parse::<IpAddr>().unwrap()];
        assert!(judge(&r, &own, "8.8.4.4", 443).is_err(), "the host's own public address");
    }

    #[test]
    fn public_means_reachable_from_the_internet() {
        for ip in ["8.8.8.8", "2a00:1450:4001::200e", "100.128.0.1"] {
            assert!(is_public(ip.parse().unwrap()), "{ip}");
        }
        let private = [
            "127.0.0.53",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.0.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.1.2.3",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "fe80::1",
            "fec0::1",
            "192.0.0.8",
            "3fff::1",
            "5f00::1",
            "fc00::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::",
            "64:ff9b::a00:5",
            "64:ff9b:1::a00:5",
            "::10.0.0.5",
            "2002:a00:5::1",
            "2001:0:4136:e378::1",
        ];
        for ip in private {
            assert!(!is_public(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn rules_that_are_not_host_and_port_are_refused() {
        for bad in ["*", "example.com", "*:0", "*:http", "exa mple.com:443", "*.*:443", ":443"] {
            assert!(Rule::parse(bad).is_err(), "{bad}");
        }
        let default: Vec<String> = DEFAULT_RULES.iter().map(|r| r.to_string()).collect();
        assert_eq!(super::rules(&default).unwrap(), rules(&["*:443"]));
    }
}
