//! Who is on the other end of a connection, and how the broker finds out:
//! TLS (with client certificates), SASL (PLAIN, SCRAM, OAUTHBEARER) and the
//! principal each yields. Authorization builds on [`Principal`].

pub mod acl;
pub mod api_authorization;
pub mod authorizer;
pub mod oauthbearer;
pub mod plain;
pub mod reload;
pub mod sasl;
pub mod scram;
pub mod tls;

use std::fmt;
use std::sync::Arc;

/// A client's identity, as Kafka writes it: `User:name`. Every mechanism
/// here yields the `User` type (as Kafka's own do).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Principal {
    pub name: String,
}

impl Principal {
    pub const TYPE: &'static str = "User";

    pub fn user(name: impl Into<String>) -> Arc<Self> {
        Arc::new(Self { name: name.into() })
    }

    /// The principal of a connection that did not authenticate (a
    /// PLAINTEXT listener, or SSL without a client certificate).
    pub fn anonymous() -> Arc<Self> {
        Self::user("ANONYMOUS")
    }
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", Self::TYPE, self.name)
    }
}
