//! Origins (`scheme://host[:port]`) and the rules that allow them.

/// A parsed request origin, borrowed from the `Origin` header; the scheme's default port is
/// dropped so that `https://a.com` and `https://a.com:443` are the same origin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Parts<'a> {
    pub(crate) scheme: &'a str,
    pub(crate) host: &'a str,
    pub(crate) port: Option<u16>,
}

/// Parses `scheme://host[:port]`: no path, no user info, no query. `null` and anything
/// else that is not a serialized origin is `None`.
pub(crate) fn parse(origin: &str) -> Option<Parts<'_>> {
    let (scheme, authority) = origin.split_once("://")?;
    if !valid_scheme(scheme) {
        return None;
    }
    let (host, port) = split_port(authority)?;
    if !valid_host(host) {
        return None;
    }
    Some(Parts {
        scheme,
        host,
        port: port.filter(|p| Some(*p) != default_port(scheme)),
    })
}

/// One allowed origin of a list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum OriginRule {
    /// Exactly this origin.
    Exact {
        scheme: String,
        host: String,
        port: Option<u16>,
    },
    /// `scheme://*.suffix[:port]`: one or more labels before `suffix` (stored with its
    /// leading dot), never `suffix` itself.
    Subdomains {
        scheme: String,
        suffix: String,
        port: Option<u16>,
    },
}

impl OriginRule {
    /// Parses a configured origin: an exact origin, or one whose host starts with a single
    /// `*.` label followed by at least two labels (`https://*.example.com`).
    pub(crate) fn parse(pattern: &str) -> Option<Self> {
        let lower = pattern.trim().to_ascii_lowercase();
        let (scheme, authority) = lower.split_once("://")?;
        if let Some(rest) = authority.strip_prefix("*.") {
            if !valid_scheme(scheme) {
                return None;
            }
            let (host, port) = split_port(rest)?;
            if host.starts_with('[') || !valid_labels(host) || !host.contains('.') {
                return None;
            }
            return Some(OriginRule::Subdomains {
                scheme: scheme.to_owned(),
                suffix: format!(".{host}"),
                port: port.filter(|p| Some(*p) != default_port(scheme)),
            });
        }
        let parts = parse(&lower)?;
        Some(OriginRule::Exact {
            scheme: parts.scheme.to_owned(),
            host: parts.host.to_owned(),
            port: parts.port,
        })
    }

    /// Whether the request origin `origin` is allowed by this rule (ASCII case-insensitive).
    pub(crate) fn matches(&self, origin: &Parts<'_>) -> bool {
        match self {
            OriginRule::Exact { scheme, host, port } => {
                origin.scheme.eq_ignore_ascii_case(scheme)
                    && origin.host.eq_ignore_ascii_case(host)
                    && origin.port == *port
            }
            OriginRule::Subdomains {
                scheme,
                suffix,
                port,
            } => {
                if !origin.scheme.eq_ignore_ascii_case(scheme) || origin.port != *port {
                    return false;
                }
                // `suffix` starts with a dot and `origin.host` has no empty label, so a
                // non-empty prefix is one or more whole labels.
                match origin.host.len().checked_sub(suffix.len()) {
                    Some(split) if split > 0 => origin
                        .host
                        .get(split..)
                        .is_some_and(|tail| tail.eq_ignore_ascii_case(suffix)),
                    _ => false,
                }
            }
        }
    }
}

fn default_port(scheme: &str) -> Option<u16> {
    if scheme.eq_ignore_ascii_case("https") {
        Some(443)
    } else if scheme.eq_ignore_ascii_case("http") {
        Some(80)
    } else {
        None
    }
}

fn valid_scheme(scheme: &str) -> bool {
    let mut bytes = scheme.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_alphabetic())
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
}

fn split_port(authority: &str) -> Option<(&str, Option<u16>)> {
    if authority.starts_with('[') {
        let end = authority.find(']')?;
        let (host, rest) = authority.split_at(end + 1);
        if rest.is_empty() {
            return Some((host, None));
        }
        return Some((host, Some(parse_port(rest.strip_prefix(':')?)?)));
    }
    match authority.rsplit_once(':') {
        Some((host, port)) => Some((host, Some(parse_port(port)?))),
        None => Some((authority, None)),
    }
}

fn parse_port(port: &str) -> Option<u16> {
    if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    port.parse().ok()
}

fn valid_host(host: &str) -> bool {
    match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(ipv6) => {
            !ipv6.is_empty()
                && ipv6
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
        }
        None => valid_labels(host),
    }
}

fn valid_labels(host: &str) -> bool {
    !host.is_empty()
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}
