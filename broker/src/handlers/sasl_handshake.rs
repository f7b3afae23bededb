//! SaslHandshake: the client names its SASL mechanism.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{SaslHandshakeRequest, SaslHandshakeResponse};

use super::str_bytes;
use crate::security::sasl::{HandshakeError, SaslSession, SaslSettings};

/// The answer, and why the connection closes after it (Kafka closes after
/// an unsupported mechanism or a handshake out of turn).
pub fn handle(
    session: &mut SaslSession,
    request: SaslHandshakeRequest,
    version: i16,
    settings: &SaslSettings,
) -> (SaslHandshakeResponse, Option<String>) {
    let enabled = settings
        .mechanisms
        .iter()
        .map(|m| str_bytes(m.name()))
        .collect();
    let response = SaslHandshakeResponse::default().with_mechanisms(enabled);
    match session.handshake(request.mechanism.as_str(), version, settings) {
        Ok(()) => (response, None),
        Err(HandshakeError::Unsupported) => (
            response.with_error_code(ResponseError::UnsupportedSaslMechanism.code()),
            Some(format!(
                "the client asked for SASL mechanism '{}'; this broker enables {}",
                request.mechanism.as_str(),
                settings
                    .mechanisms
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
