//! SaslAuthenticate: one step of the SASL exchange the handshake chose.

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{SaslAuthenticateRequest, SaslAuthenticateResponse};
use kafscale_metadata::MetadataStore;

use super::str_bytes;
use crate::security::sasl::{SaslSession, SaslSettings, Step};

/// The answer, and on failure why the connection closes after it.
pub async fn handle(
    session: &mut SaslSession,
    request: SaslAuthenticateRequest,
    version: i16,
    settings: &SaslSettings,
    credentials: &MetadataStore,
) -> (SaslAuthenticateResponse, Option<String>) {
    match session
        .authenticate(&request.auth_bytes, settings, credentials)
        .await
    {
        Ok(step) => {
            let lifetime = match &step {
                // The field exists from v1 (KIP-368); older clients are
                // simply closed when their session ends.
                Step::Complete {
                    session_lifetime_ms,
                    ..
                } if version >= 1 => *session_lifetime_ms,
                _ => 0,
            };
            (
                SaslAuthenticateResponse::default()
                    .with_auth_bytes(Bytes::from(step.into_bytes()))
                    .with_session_lifetime_ms(lifetime),
                None,
            )
        }
        Err(failure) => {
            let code = if failure.illegal_state {
                ResponseError::IllegalSaslState
            } else {
                ResponseError::SaslAuthenticationFailed
            };
            (
                SaslAuthenticateResponse::default()
                    .with_error_code(code.code())
                    .with_error_message(Some(str_bytes(failure.message.clone()))),
                Some(failure.message),
            )
        }
    }
}
