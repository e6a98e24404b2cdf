//! NBD URIs as libnbd and QEMU spell them (NetworkBlockDevice/nbd doc/uri.md):
//! `nbd://host[:port]/export` over TCP and `nbd+unix:///export?socket=PATH` over a Unix
//! socket, so a user can paste what `nbdinfo` or `qemu-img` already take. TLS and vsock
//! transports are refused by name rather than misread.

/// NBD's IANA port, the default when a TCP URI names none.
pub const DEFAULT_PORT: u16 = 10809;

/// Where the server is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// A host name or address and a port.
    Tcp {
        /// As written in the URI (brackets of an IPv6 literal removed).
        host: String,
        /// The port.
        port: u16,
    },
    /// A Unix socket path.
    Unix(String),
}

/// A parsed NBD URI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NbdUri {
    /// The server.
    pub endpoint: Endpoint,
    /// The export name ("" is the server's default export).
    pub export: String,
}

/// Decodes `%XX` escapes; refuses malformed escapes and results that are not UTF-8.
fn percent_decode(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("bad percent escape in '{s}'"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("'{s}' does not decode to UTF-8"))
}

/// Splits `host[:port]` (an IPv6 literal in brackets).
fn parse_authority(authority: &str) -> Result<(String, u16), String> {
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or_else(|| format!("unclosed '[' in '{authority}'"))?;
        let port = match after {
            "" => None,
            p => Some(
                p.strip_prefix(':')
                    .ok_or_else(|| format!("junk after ']' in '{authority}'"))?,
            ),
        };
        (host.to_string(), port)
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host.to_string(), Some(port)),
            None => (authority.to_string(), None),
        }
    };
    if host.is_empty() {
        return Err("an nbd:// URI needs a host".into());
    }
    let port = match port {
        None | Some("") => DEFAULT_PORT,
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|&p| p != 0)
            .ok_or_else(|| format!("bad port '{p}'"))?,
    };
    Ok((host, port))
}

impl NbdUri {
    /// Parses `uri`; the error says what is wrong in words a user can act on.
    pub fn parse(uri: &str) -> Result<NbdUri, String> {
        let (scheme, rest) = uri
            .split_once("://")
            .ok_or_else(|| format!("'{uri}' is not an NBD URI (nbd://host/export)"))?;
        let unix = match scheme.to_ascii_lowercase().as_str() {
            "nbd" | "nbd+tcp" => false,
            "nbd+unix" => true,
            "nbds" | "nbds+tcp" | "nbds+unix" => {
                return Err(format!("{scheme}: TLS is not supported"));
            }
            other => return Err(format!("unsupported URI scheme '{other}'")),
        };
        let (rest, query) = match rest.split_once('?') {
            Some((r, q)) => (r, Some(q)),
            None => (rest, None),
        };
        if rest.contains('#') {
            return Err("NBD URIs take no fragment".into());
        }
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (rest, ""),
        };
        let export = percent_decode(path)?;
        let mut socket = None;
        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            match pair.split_once('=') {
                Some(("socket", path)) if unix => socket = Some(percent_decode(path)?),
                _ => return Err(format!("unsupported URI query '{pair}'")),
            }
        }
        let endpoint = if unix {
            if !authority.is_empty() {
                return Err("an nbd+unix URI has no host: nbd+unix:///export?socket=PATH".into());
            }
            let path = socket.ok_or("an nbd+unix URI needs ?socket=PATH")?;
            if !path.starts_with('/') {
                return Err(format!("socket path '{path}' must be absolute"));
            }
            Endpoint::Unix(path)
        } else {
            let (host, port) = parse_authority(authority)?;
            Endpoint::Tcp { host, port }
        };
        Ok(NbdUri { endpoint, export })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp(host: &str, port: u16, export: &str) -> NbdUri {
        NbdUri {
            endpoint: Endpoint::Tcp {
                host: host.into(),
                port,
            },
            export: export.into(),
        }
    }

    #[test]
    fn tcp_uris_as_libnbd_and_qemu_write_them() {
        assert_eq!(
            NbdUri::parse("nbd://example.com/disk").unwrap(),
            tcp("example.com", 10809, "disk")
        );
        assert_eq!(
            NbdUri::parse("nbd://10.0.0.1:10810/a%20b/c").unwrap(),
            tcp("10.0.0.1", 10810, "a b/c")
        );
        assert_eq!(
            NbdUri::parse("nbd://[::1]:2000/").unwrap(),
            tcp("::1", 2000, "")
        );
        assert_eq!(NbdUri::parse("nbd://h").unwrap(), tcp("h", 10809, ""));
        assert_eq!(NbdUri::parse("NBD+TCP://h:1/x").unwrap(), tcp("h", 1, "x"));
    }

    #[test]
    fn unix_uris_take_the_socket_from_the_query() {
        assert_eq!(
            NbdUri::parse("nbd+unix:///exp?socket=/tmp/nbd%2e.sock").unwrap(),
            NbdUri {
                endpoint: Endpoint::Unix("/tmp/nbd..sock".into()),
                export: "exp".into()
            }
        );
        assert_eq!(NbdUri::parse("nbd+unix://?socket=/s").unwrap().export, "");
    }

    #[test]
    fn malformed_or_unsupported_uris_are_refused_with_a_reason() {
        for (uri, why) in [
            ("/tmp/sock", "not an NBD URI"),
            ("http://h/x", "unsupported URI scheme"),
            ("nbds://h/x", "TLS"),
            ("nbd:///x", "needs a host"),
            ("nbd://h:0/x", "bad port"),
            ("nbd://h:99999/x", "bad port"),
            ("nbd://[::1/x", "unclosed"),
            ("nbd://h/x?socket=/s", "unsupported URI query"),
            ("nbd://h/%zz", "percent"),
            ("nbd://h/%ff", "UTF-8"),
            ("nbd+unix:///x", "needs ?socket"),
            ("nbd+unix://h/x?socket=/s", "has no host"),
            ("nbd+unix:///x?socket=rel", "absolute"),
            ("nbd://h/x#frag", "fragment"),
        ] {
            let err = NbdUri::parse(uri).unwrap_err();
            assert!(err.contains(why), "{uri}: {err}");
        }
    }
}
