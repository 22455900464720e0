//! Where orderflow may send: the check of a configured or submitted URL (`http`/`https`
//! only, a host, no credentials) and, with `[outbound] block_private_addresses`, the guard
//! against server-side request forgery: no host that resolves to a loopback, private,
//! link-local or otherwise internal address, checked when the URL is stored and again by
//! the client's resolver at send time ([`PublicOnly`]), so a name that later resolves
//! elsewhere (DNS rebinding) is caught.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use reqwest::Url;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UrlError {
    #[error("{0:?} is not a URL: {1}")]
    Invalid(String, String),
    #[error("URL scheme {0:?} is not allowed (http or https only)")]
    Scheme(String),
    #[error("URL has no host")]
    NoHost,
    #[error("URL must not carry a user name or password")]
    Credentials,
    #[error("host {host} could not be resolved: {reason}")]
    Unresolved { host: String, reason: String },
    #[error(
        "host {host} resolves to {addr}, an internal address (outbound.block_private_addresses)"
    )]
    Private { host: String, addr: IpAddr },
}

/// Checks a URL to be stored for outbound requests: it parses, is `http` or `https`, has a
/// host and no credentials; with `block_private`, every address the host resolves to is
/// public.
pub async fn check_url(text: &str, block_private: bool) -> Result<Url, UrlError> {
    let url = parse_url(text)?;
    if !block_private {
        return Ok(url);
    }
    check_literal(&url)?;
    let host = url.host_str().unwrap_or_default();
    if let Some(url::Host::Domain(name)) = url.host() {
        let port = url.port_or_known_default().unwrap_or(80);
        let addrs =
            tokio::net::lookup_host((name, port))
                .await
                .map_err(|e| UrlError::Unresolved {
                    host: host.to_owned(),
                    reason: e.to_string(),
                })?;
        for a in addrs {
            if is_internal(a.ip()) {
                return Err(UrlError::Private {
                    host: host.to_owned(),
                    addr: a.ip(),
                });
            }
        }
    }
    Ok(url)
}

/// The part of [`check_url`] that needs no DNS: it parses, is `http` or `https`, has a host
/// and no credentials (they would be stored and logged with it; use a header).
pub fn parse_url(text: &str) -> Result<Url, UrlError> {
    let url = Url::parse(text).map_err(|e| UrlError::Invalid(text.to_owned(), e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(UrlError::Scheme(url.scheme().to_owned()));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(UrlError::NoHost);
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(UrlError::Credentials);
    }
    Ok(url)
}

/// Refuses a URL whose host is an internal address literal.
pub(super) fn check_literal(url: &Url) -> Result<(), UrlError> {
    let ip = match url.host() {
        Some(url::Host::Ipv4(v4)) => IpAddr::V4(v4),
        Some(url::Host::Ipv6(v6)) => IpAddr::V6(v6),
        _ => return Ok(()),
    };
    if is_internal(ip) {
        return Err(UrlError::Private {
            host: url.host_str().unwrap_or_default().to_owned(),
            addr: ip,
        });
    }
    Ok(())
}

/// Loopback, private, link-local, shared (CGNAT), unspecified, broadcast, multicast and
/// documentation ranges, in IPv4 and IPv6 (IPv4-mapped IPv6 as its IPv4 address).
pub fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => internal_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => internal_v4(v4),
            None => internal_v6(v6),
        },
    }
}

fn internal_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0
        || (a == 100 && (64..128).contains(&b))
        || (a == 192 && b == 0 && ip.octets()[2] == 0)
        || a >= 240
}

fn internal_v6(ip: Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || (first & 0xfe00) == 0xfc00 // unique local fc00::/7
        || (first & 0xffc0) == 0xfe80 // link-local fe80::/10
        || (first & 0xffc0) == 0xfec0 // site-local fec0::/10 (deprecated)
        || (first == 0x2001 && ip.segments()[1] == 0x0db8) // documentation
        || ip.to_ipv4().is_some_and(|v4| first == 0 && internal_v4(v4)) // IPv4-compatible
}

/// The resolver of a client with `block_private_addresses`: the system's answer without
/// internal addresses; none left is an error, so the request fails (and is retried: DNS
/// may change back) without connecting anywhere internal.
pub(super) struct PublicOnly;

impl Resolve for PublicOnly {
    fn resolve(&self, name: Name) -> Resolving {
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let all: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let public: Vec<SocketAddr> = all
                .iter()
                .copied()
                .filter(|a| !is_internal(a.ip()))
                .collect();
            if public.is_empty() {
                let err: Box<dyn std::error::Error + Send + Sync> = format!(
                    "{host} resolves only to internal addresses (outbound.block_private_addresses)"
                )
                .into();
                return Err(err);
            }
            let addrs: Addrs = Box::new(public.into_iter());
            Ok(addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn urls_must_be_http_with_a_host() {
        assert!(
            check_url("https://psp.example/capture", false)
                .await
                .is_ok()
        );
        assert!(check_url("http://127.0.0.1:9/x", false).await.is_ok());
        assert!(matches!(
            check_url("ftp://psp.example/", false).await,
            Err(UrlError::Scheme(s)) if s == "ftp"
        ));
        assert!(matches!(
            check_url("file:///etc/passwd", false).await,
            Err(UrlError::Scheme(_))
        ));
        assert!(matches!(
            check_url("not a url", false).await,
            Err(UrlError::Invalid(..))
        ));
        assert_eq!(
            check_url("https://user:pw@psp.example/", false).await,
            Err(UrlError::Credentials)
        );
    }

    #[tokio::test]
    async fn the_guard_refuses_internal_addresses() {
        for url in [
            "http://127.0.0.1/",
            "http://10.1.2.3/",
            "http://172.16.0.1/",
            "http://192.168.1.1/",
            "http://169.254.169.254/latest/meta-data",
            "http://100.64.0.1/",
            "http://0.0.0.0/",
            "http://[::1]/",
            "http://[fe80::1]/",
            "http://[fd00::1]/",
            "http://[::ffff:127.0.0.1]/",
            "http://localhost:8080/",
        ] {
            assert!(
                matches!(check_url(url, true).await, Err(UrlError::Private { .. })),
                "{url}"
            );
            assert!(check_url(url, false).await.is_ok(), "{url}");
        }
        assert!(check_url("http://93.184.215.14/", true).await.is_ok());
        assert!(check_url("http://[2606:4700::1111]/", true).await.is_ok());
    }

    #[test]
    fn public_addresses_are_not_internal() {
        for ip in [
            "8.8.8.8",
            "1.1.1.1",
            "172.32.0.1",
            "100.128.0.1",
            "2001:4860::8888",
        ] {
            assert!(!is_internal(ip.parse().unwrap()), "{ip}");
        }
    }
}
