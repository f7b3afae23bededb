//! SaslHandshake: the client names its SASL mechanism.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{SaslHandshakeRequest, SaslHandshakeResponse};

use super::str_bytes;
use crate::security::sasl::{HandshakeError, Mechanism, SaslSession};

/// The answer, and why the connection closes after it (Kafka closes after
/// an unsupported mechanism or a handshake out of turn). `enabled`: the
/// listener's mechanisms.
pub fn handle(
    session: &mut SaslSession,
    request: SaslHandshakeRequest,
    version: i16,
    enabled: &[Mechanism],
) -> (SaslHandshakeResponse, Option<String>) {
    let offered = enabled.iter().map(|m| str_bytes(m.name())).collect();
    let response = SaslHandshakeResponse::default().with_mechanisms(offered);
    match session.handshake(request.mechanism.as_str(), version, enabled) {
        Ok(()) => (response, None),
        Err(HandshakeError::Unsupported) => (
            response.with_error_code(ResponseError::UnsupportedSaslMechanism.code()),
            Some(format!(
                "the client asked for SASL mechanism '{}'; this listener enables {}",
                request.mechanism.as_str(),
                enabled
                    .iter()
                    .map(|m| m.name())
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        ),
        Err(HandshakeError::IllegalState(why)) => (
            response.with_error_code(ResponseError::IllegalSaslState.code()),
            Some(why),
        ),
    }
}
