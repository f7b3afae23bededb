//! Listener settings in Kafka's syntax: `--listeners`,
//! `--advertised-listeners` and `--listener-security-protocol-map`.
//!
//! `PLAINTEXT://127.0.0.1:9092,SASL_SSL://0.0.0.0:9093` names two listeners
//! after their protocols; with a protocol map, names are free
//! (`INTERNAL://:9092,EXTERNAL://:9093` with `INTERNAL:SASL_PLAINTEXT,EXTERNAL:SASL_SSL`).
//! Each listener has its own advertised address, and Metadata answers a
//! client with the addresses of the listener it came in on.

use std::collections::BTreeMap;
use std::fmt;

/// How a listener's connections are secured, as Kafka names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SecurityProtocol {
    Plaintext,
    Ssl,
    SaslPlaintext,
    SaslSsl,
}

impl SecurityProtocol {
    pub const ALL: [SecurityProtocol; 4] = [
        SecurityProtocol::Plaintext,
        SecurityProtocol::Ssl,
        SecurityProtocol::SaslPlaintext,
        SecurityProtocol::SaslSsl,
    ];

    pub fn name(self) -> &'static str {
        match self {
            SecurityProtocol::Plaintext => "PLAINTEXT",
            SecurityProtocol::Ssl => "SSL",
            SecurityProtocol::SaslPlaintext => "SASL_PLAINTEXT",
            SecurityProtocol::SaslSsl => "SASL_SSL",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|p| p.name().eq_ignore_ascii_case(s))
    }

    pub fn uses_tls(self) -> bool {
        matches!(self, SecurityProtocol::Ssl | SecurityProtocol::SaslSsl)
    }

    pub fn uses_sasl(self) -> bool {
        matches!(
            self,
            SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl
        )
    }
}

impl fmt::Display for SecurityProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One listener: its name, protocol, the address it binds and the one
/// clients are told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    pub name: String,
    pub protocol: SecurityProtocol,
    /// `host:port` to bind; an empty host binds every address.
    pub bind_host: String,
    pub bind_port: u16,
    pub advertised_host: Option<String>,
    pub advertised_port: Option<u16>,
}

impl Listener {
    pub fn bind_address(&self) -> String {
        let host = if self.bind_host.is_empty() {
            "0.0.0.0"
        } else {
            &self.bind_host
        };
        if host.contains(':') {
            format!("[{host}]:{}", self.bind_port)
        } else {
            format!("{host}:{}", self.bind_port)
        }
    }
}

/// One `NAME://host:port` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    name: String,
    host: String,
    port: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ListenerError {
    #[error("listener '{0}' is not NAME://host:port (e.g. PLAINTEXT://0.0.0.0:9092)")]
    Syntax(String),
    #[error("listener '{entry}': port '{port}' is not a number from 0 to 65535")]
    Port { entry: String, port: String },
    #[error("listener name '{0}' appears twice; every listener needs its own name")]
    DuplicateName(String),
    #[error("listeners '{0}' and '{1}' bind the same port {2}")]
    DuplicatePort(String, String, u16),
    #[error("listener '{0}' has no security protocol: name it after one (PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL) or map it with --listener-security-protocol-map NAME:PROTOCOL")]
    UnknownProtocol(String),
    #[error("'{0}' in --listener-security-protocol-map is not NAME:PROTOCOL with PROTOCOL one of PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL")]
    MapSyntax(String),
    #[error("--advertised-listeners names '{0}', which is not in --listeners")]
    AdvertisedUnknown(String),
    #[error("--listeners is empty; give at least one, e.g. PLAINTEXT://127.0.0.1:9092")]
    Empty,
    #[error("'{entry}' in {flag} is not LISTENER:VALUE (entries separated by ';')")]
    OverrideSyntax { flag: &'static str, entry: String },
    #[error("{flag} names listener '{name}', which is not in --listeners")]
    OverrideUnknown { flag: &'static str, name: String },
}

fn split_list(s: &str) -> impl Iterator<Item = &str> {
    s.split(',').map(str::trim).filter(|e| !e.is_empty())
}

fn parse_entry(entry: &str) -> Result<Entry, ListenerError> {
    let syntax = || ListenerError::Syntax(entry.to_string());
    let (name, address) = entry.split_once("://").ok_or_else(syntax)?;
    if name.is_empty() {
        return Err(syntax());
    }
    // `[::1]:9092` for IPv6, `host:9092` otherwise; an empty host means all.
    let (host, port) = match address.strip_prefix('[') {
        Some(rest) => {
            let (host, port) = rest.split_once("]:").ok_or_else(syntax)?;
            (host, port)
        }
        None => address.rsplit_once(':').ok_or_else(syntax)?,
    };
    let port = port.parse::<u16>().map_err(|_| ListenerError::Port {
        entry: entry.to_string(),
        port: port.to_string(),
    })?;
    Ok(Entry {
        name: name.to_ascii_uppercase(),
        host: host.to_string(),
        port,
    })
}

/// Parses `--listener-security-protocol-map` (`NAME:PROTOCOL,...`).
pub fn parse_protocol_map(s: &str) -> Result<BTreeMap<String, SecurityProtocol>, ListenerError> {
    split_list(s)
        .map(|pair| {
            let bad = || ListenerError::MapSyntax(pair.to_string());
            let (name, protocol) = pair.split_once(':').ok_or_else(bad)?;
            let protocol = SecurityProtocol::parse(protocol.trim()).ok_or_else(bad)?;
            Ok((name.trim().to_ascii_uppercase(), protocol))
        })
        .collect()
}

/// Per-listener settings, Kafka's `listener.name.<name>.<setting>`, as
/// `NAME:VALUE;NAME:VALUE`: `;` separates listeners because a value may be
/// a comma list (`EXTERNAL:SCRAM-SHA-512,SCRAM-SHA-256;OAUTH:OAUTHBEARER`).
/// Every name must be one of `listeners`.
pub fn parse_listener_overrides(
    s: &str,
    flag: &'static str,
    listeners: &[Listener],
) -> Result<BTreeMap<String, String>, ListenerError> {
    s.split(';')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(|entry| {
            let (name, value) = entry
                .split_once(':')
                .filter(|(n, v)| !n.trim().is_empty() && !v.trim().is_empty())
                .ok_or_else(|| ListenerError::OverrideSyntax {
                    flag,
                    entry: entry.to_string(),
                })?;
            let name = name.trim().to_ascii_uppercase();
            if !listeners.iter().any(|l| l.name == name) {
                return Err(ListenerError::OverrideUnknown { flag, name });
            }
            Ok((name, value.trim().to_string()))
        })
        .collect()
}

/// Resolves the listener flags into listeners. `advertised` entries override
/// per name; a listener not advertised is told as it binds (see
/// [`Listener::advertised_host`]).
pub fn parse_listeners(
    listeners: &str,
    advertised: &str,
    protocol_map: &str,
) -> Result<Vec<Listener>, ListenerError> {
    let map = parse_protocol_map(protocol_map)?;
    let mut out: Vec<Listener> = Vec::new();
    for entry in split_list(listeners).map(parse_entry) {
        let entry = entry?;
        if out.iter().any(|l| l.name == entry.name) {
            return Err(ListenerError::DuplicateName(entry.name));
        }
        // Port 0 picks a free port per listener; those never collide.
        if let Some(other) = out
            .iter()
            .find(|l| entry.port != 0 && l.bind_port == entry.port)
        {
            return Err(ListenerError::DuplicatePort(
                other.name.clone(),
                entry.name,
                entry.port,
            ));
        }
        let protocol = map
            .get(&entry.name)
            .copied()
            .or_else(|| SecurityProtocol::parse(&entry.name))
            .ok_or_else(|| ListenerError::UnknownProtocol(entry.name.clone()))?;
        out.push(Listener {
            name: entry.name,
            protocol,
            bind_host: entry.host,
            bind_port: entry.port,
            advertised_host: None,
            advertised_port: None,
        });
    }
    if out.is_empty() {
        return Err(ListenerError::Empty);
    }
    for entry in split_list(advertised).map(parse_entry) {
        let entry = entry?;
        let listener = out
            .iter_mut()
            .find(|l| l.name == entry.name)
            .ok_or_else(|| ListenerError::AdvertisedUnknown(entry.name.clone()))?;
        listener.advertised_host = (!entry.host.is_empty()).then_some(entry.host);
        listener.advertised_port = (entry.port != 0).then_some(entry.port);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kafka_syntax_with_protocol_names_and_advertised_addresses() {
        let ls = parse_listeners(
            "PLAINTEXT://127.0.0.1:9092, SASL_SSL://:9093,ssl://[::1]:9094",
            "SASL_SSL://broker-0.example:19093",
            "",
        )
        .unwrap();
        assert_eq!(ls.len(), 3);
        assert_eq!(
            (ls[0].name.as_str(), ls[0].protocol, ls[0].bind_address()),
            (
                "PLAINTEXT",
                SecurityProtocol::Plaintext,
                "127.0.0.1:9092".into()
            )
        );
        assert_eq!(ls[1].protocol, SecurityProtocol::SaslSsl);
        assert_eq!(ls[1].bind_address(), "0.0.0.0:9093");
        assert_eq!(ls[1].advertised_host.as_deref(), Some("broker-0.example"));
        assert_eq!(ls[1].advertised_port, Some(19093));
        assert_eq!(ls[2].name, "SSL");
        assert_eq!(ls[2].bind_address(), "[::1]:9094");
        assert_eq!(ls[0].advertised_host, None);
    }

    #[test]
    fn free_names_need_the_protocol_map() {
        assert_eq!(
            parse_listeners("INTERNAL://:9092", "", ""),
            Err(ListenerError::UnknownProtocol("INTERNAL".into()))
        );
        let ls = parse_listeners(
            "INTERNAL://:9092,EXTERNAL://:9093",
            "",
            "INTERNAL:SASL_PLAINTEXT, external:ssl",
        )
        .unwrap();
        assert_eq!(ls[0].protocol, SecurityProtocol::SaslPlaintext);
        assert_eq!(ls[1].protocol, SecurityProtocol::Ssl);
        assert!(ls[1].protocol.uses_tls() && !ls[1].protocol.uses_sasl());
    }

    #[test]
    fn mistakes_are_named() {
        assert!(matches!(
            parse_listeners("127.0.0.1:9092", "", ""),
            Err(ListenerError::Syntax(_))
        ));
        assert!(matches!(
            parse_listeners("PLAINTEXT://h:99999", "", ""),
            Err(ListenerError::Port { .. })
        ));
        assert_eq!(
            parse_listeners("PLAINTEXT://:9092,PLAINTEXT://:9093", "", ""),
            Err(ListenerError::DuplicateName("PLAINTEXT".into()))
        );
        assert_eq!(
            parse_listeners("PLAINTEXT://:9092,SSL://:9092", "", ""),
            Err(ListenerError::DuplicatePort(
                "PLAINTEXT".into(),
                "SSL".into(),
                9092
            ))
        );
        assert!(parse_listeners("PLAINTEXT://:0,SSL://:0", "", "").is_ok());
        assert_eq!(
            parse_listeners("PLAINTEXT://:9092", "SSL://h:1", ""),
            Err(ListenerError::AdvertisedUnknown("SSL".into()))
        );
        assert!(matches!(
            parse_listeners("A://:1", "", "A=SSL"),
            Err(ListenerError::MapSyntax(_))
        ));
        assert_eq!(parse_listeners(" , ", "", ""), Err(ListenerError::Empty));
    }

    #[test]
    fn per_listener_settings_name_existing_listeners() {
        let ls = parse_listeners(
            "INTERNAL://:9092,EXTERNAL://:9093,OAUTH://:9097",
            "",
            "INTERNAL:SASL_PLAINTEXT,EXTERNAL:SASL_SSL,OAUTH:SASL_SSL",
        )
        .unwrap();
        let flag = "--listener-sasl-enabled-mechanisms";
        let got = parse_listener_overrides(
            "external:SCRAM-SHA-512,SCRAM-SHA-256; OAUTH : OAUTHBEARER ;",
            flag,
            &ls,
        )
        .unwrap();
        assert_eq!(
            got,
            BTreeMap::from([
                ("EXTERNAL".into(), "SCRAM-SHA-512,SCRAM-SHA-256".into()),
                ("OAUTH".into(), "OAUTHBEARER".into()),
            ])
        );
        assert!(parse_listener_overrides("", flag, &ls).unwrap().is_empty());
        assert_eq!(
            parse_listener_overrides("PUBLIC:PLAIN", flag, &ls),
            Err(ListenerError::OverrideUnknown {
                flag,
                name: "PUBLIC".into()
            })
        );
        for bad in ["EXTERNAL", "EXTERNAL:", ":PLAIN"] {
            assert!(
                matches!(
                    parse_listener_overrides(bad, flag, &ls),
                    Err(ListenerError::OverrideSyntax { .. })
                ),
                "{bad}"
            );
        }
    }
}
