//! One connection's SASL state, as Kafka's broker keeps it: on a SASL
//! listener only ApiVersions, SaslHandshake and SaslAuthenticate are served
//! until authentication succeeds; a failure is answered and the connection
//! closed; and with `--connections-max-reauth-ms` a session has a lifetime
//! within which the client re-authenticates (KIP-368), or the next request
//! after it closes the connection.
//!
//! SaslHandshake v0 is followed by raw SASL tokens instead of
//! SaslAuthenticate requests (what clients before Kafka 1.0 send);
//! [`SaslSession::expects_raw_token`] tells the connection so.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kafka_protocol::messages::ApiKey;
use kafscale_metadata::MetadataStore;

use super::oauthbearer::{self, TokenKeys, TokenRules};
use super::reload::Reloadable;
use super::scram::{AwaitingProof, ScramExchange, ScramMechanism};
use super::{plain, Principal};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mechanism {
    Plain,
    Scram(ScramMechanism),
    OAuthBearer,
}

impl Mechanism {
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Plain => "PLAIN",
            Mechanism::Scram(m) => m.name(),
            Mechanism::OAuthBearer => "OAUTHBEARER",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "PLAIN" => Some(Mechanism::Plain),
            "OAUTHBEARER" => Some(Mechanism::OAuthBearer),
            other => ScramMechanism::from_name(other).map(Mechanism::Scram),
        }
    }
}

/// OAUTHBEARER's keys and rules.
pub struct OAuthSettings {
    pub keys: Arc<Reloadable<TokenKeys>>,
    pub rules: TokenRules,
}

/// The broker's SASL settings, shared by its SASL listeners but for the
/// mechanisms each enables.
pub struct SaslSettings {
    /// Kafka's `sasl.enabled.mechanisms`: listeners without their own list.
    pub mechanisms: Vec<Mechanism>,
    /// Kafka's `listener.name.<name>.sasl.enabled.mechanisms`, by listener name.
    pub listener_mechanisms: BTreeMap<String, Vec<Mechanism>>,
    /// Kafka's `connections.max.reauth.ms`; `None` (0): sessions last as
    /// long as the connection.
    pub max_reauth: Option<Duration>,
    /// Kafka's `connection.failed.authentication.delay.ms`: a failure is
    /// answered this late, which slows password guessing.
    pub failed_authentication_delay: Duration,
    pub oauth: Option<OAuthSettings>,
}

impl std::fmt::Debug for SaslSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SaslSettings")
            .field("mechanisms", &self.mechanisms)
            .field("listener_mechanisms", &self.listener_mechanisms)
            .field("max_reauth", &self.max_reauth)
            .field(
                "failed_authentication_delay",
                &self.failed_authentication_delay,
            )
            .field("oauth", &self.oauth.as_ref().map(|o| &o.rules))
            .finish()
    }
}

impl Default for SaslSettings {
    fn default() -> Self {
        Self {
            mechanisms: vec![
                Mechanism::Scram(ScramMechanism::Sha256),
                Mechanism::Scram(ScramMechanism::Sha512),
            ],
            listener_mechanisms: BTreeMap::new(),
            max_reauth: None,
            failed_authentication_delay: Duration::from_millis(100),
            oauth: None,
        }
    }
}

impl SaslSettings {
    /// The mechanisms the listener `listener` offers.
    pub fn enabled(&self, listener: &str) -> &[Mechanism] {
        self.listener_mechanisms
            .get(listener)
            .unwrap_or(&self.mechanisms)
    }
}

/// The largest SASL message accepted: SCRAM and PLAIN messages are a few
/// hundred bytes, tokens a few kilobytes.
pub const MAX_SASL_MESSAGE: usize = 64 * 1024;

enum State {
    /// No handshake yet.
    Start,
    /// Handshake done; the first message of `mechanism` is next.
    Handshaken {
        mechanism: Mechanism,
        raw: bool,
    },
    /// SCRAM server-first sent; the client's proof is next.
    ScramProof {
        mechanism: Mechanism,
        raw: bool,
        exchange: AwaitingProof,
    },
    Authenticated,
}

/// What the connection does with a request before it reaches a handler.
#[derive(Debug, PartialEq, Eq)]
pub enum Gate {
    Serve,
    /// Close the connection; the reason is logged.
    Close(String),
}

#[derive(Debug, PartialEq, Eq)]
pub enum HandshakeError {
    /// UNSUPPORTED_SASL_MECHANISM; the answer lists the enabled ones.
    Unsupported,
    /// ILLEGAL_SASL_STATE.
    IllegalState(String),
}

/// A successful authentication step: the bytes to send back, and when the
/// exchange completed, the session's lifetime in milliseconds (0: none).
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    Challenge(Vec<u8>),
    Complete {
        response: Vec<u8>,
        session_lifetime_ms: i64,
    },
}

impl Step {
    /// The bytes that go back to the client.
    pub fn into_bytes(self) -> Vec<u8> {
        match self {
            Step::Challenge(bytes) => bytes,
            Step::Complete { response, .. } => response,
        }
    }
}

/// A failed authentication (SASL_AUTHENTICATION_FAILED or
/// ILLEGAL_SASL_STATE): answered with the message, then closed.
#[derive(Debug, PartialEq, Eq)]
pub struct AuthFailure {
    pub illegal_state: bool,
    pub message: String,
}

impl AuthFailure {
    fn failed(message: impl Into<String>) -> Self {
        Self {
            illegal_state: false,
            message: message.into(),
        }
    }
}

pub struct SaslSession {
    /// Whether this listener authenticates with SASL at all.
    enabled: bool,
    state: State,
    principal: Arc<Principal>,
    /// The mechanism of the current session (re-authentication keeps it).
    session_mechanism: Option<Mechanism>,
    expires: Option<Instant>,
}

impl SaslSession {
    /// A connection's state; `principal` is who it is before any SASL (the
    /// TLS client certificate's principal, or ANONYMOUS).
    pub fn new(enabled: bool, principal: Arc<Principal>) -> Self {
        Self {
            enabled,
            state: State::Start,
            principal,
            session_mechanism: None,
            expires: None,
        }
    }

    pub fn principal(&self) -> &Arc<Principal> {
        &self.principal
    }

    /// Whether the client may send what an authenticated client may: always
    /// on listeners without SASL.
    pub fn authenticated(&self) -> bool {
        !self.enabled || matches!(self.state, State::Authenticated)
    }

    pub fn expects_raw_token(&self) -> bool {
        matches!(
            self.state,
            State::Handshaken { raw: true, .. } | State::ScramProof { raw: true, .. }
        )
    }

    /// Whether a request for `api` may be served now.
    pub fn gate(&self, api: ApiKey, now: Instant) -> Gate {
        if !self.enabled {
            return Gate::Serve;
        }
        let authenticating = matches!(api, ApiKey::SaslHandshake | ApiKey::SaslAuthenticate);
        match self.state {
            State::Authenticated => match self.expires {
                Some(at) if now >= at && !authenticating => Gate::Close(format!(
                    "{api:?} after the SASL session expired: the client did not re-authenticate within connections.max.reauth.ms (KIP-368); it reconnects"
                )),
                _ => Gate::Serve,
            },
            State::Start if authenticating || api == ApiKey::ApiVersions => Gate::Serve,
            State::Handshaken { .. } | State::ScramProof { .. } if authenticating => Gate::Serve,
            _ => Gate::Close(format!(
                "{api:?} before SASL authentication completed: on this listener a client must authenticate first (configure security.protocol and sasl.mechanism)"
            )),
        }
    }

    /// SaslHandshake: picks the mechanism among those the listener
    /// `enabled`. `version` 0 means raw tokens follow.
    pub fn handshake(
        &mut self,
        mechanism: &str,
        version: i16,
        enabled: &[Mechanism],
    ) -> Result<(), HandshakeError> {
        if !self.enabled {
            return Err(HandshakeError::IllegalState(
                "SaslHandshake on a listener without SASL; connect to a SASL_PLAINTEXT or SASL_SSL listener, or use security.protocol=PLAINTEXT/SSL".into(),
            ));
        }
        let Some(chosen) = Mechanism::from_name(mechanism).filter(|m| enabled.contains(m)) else {
            return Err(HandshakeError::Unsupported);
        };
        match self.state {
            State::Start => {}
            State::Authenticated => {
                if version == 0 {
                    return Err(HandshakeError::IllegalState(
                        "re-authentication needs SaslHandshake v1".into(),
                    ));
                }
                if self.session_mechanism != Some(chosen) {
                    return Err(HandshakeError::IllegalState(format!(
                        "re-authentication with {} on a session authenticated with {}; a session keeps its mechanism",
                        chosen.name(),
                        self.session_mechanism.map(Mechanism::name).unwrap_or("none"),
                    )));
                }
            }
            _ => {
                return Err(HandshakeError::IllegalState(
                    "SaslHandshake in the middle of an authentication".into(),
                ))
            }
        }
        self.state = State::Handshaken {
            mechanism: chosen,
            raw: version == 0,
        };
        Ok(())
    }

    /// The next SASL message of the exchange (from SaslAuthenticate, or raw).
    pub async fn authenticate(
        &mut self,
        message: &[u8],
        settings: &SaslSettings,
        credentials: &MetadataStore,
    ) -> Result<Step, AuthFailure> {
        // Taken out so that a failure leaves no exchange half done (the
        // connection closes after it anyway).
        let state = std::mem::replace(&mut self.state, State::Start);
        if message.len() > MAX_SASL_MESSAGE {
            return Err(AuthFailure::failed(format!(
                "SASL message of {} bytes exceeds the limit of {MAX_SASL_MESSAGE}",
                message.len()
            )));
        }
        let failed = |e: &dyn std::fmt::Display| AuthFailure::failed(e.to_string());
        match state {
            State::Handshaken {
                mechanism: Mechanism::Plain,
                ..
            } => {
                let user = authenticate_plain(message, credentials).await?;
                self.complete(Mechanism::Plain, user, None, settings, Vec::new())
            }
            State::Handshaken {
                mechanism: Mechanism::OAuthBearer,
                ..
            } => {
                let token = oauthbearer::bearer_token(message).map_err(|e| failed(&e))?;
                let oauth = settings.oauth.as_ref().ok_or_else(|| {
                    AuthFailure::failed("OAUTHBEARER is enabled without token keys")
                })?;
                let verified = oauthbearer::verify(token, &oauth.keys.get(), &oauth.rules)
                    .map_err(|e| failed(&e))?;
                let remaining_ms = verified
                    .expires_at
                    .saturating_mul(1000)
                    .saturating_sub(crate::now_ms());
                self.complete(
                    Mechanism::OAuthBearer,
                    verified.principal,
                    Some(remaining_ms),
                    settings,
                    Vec::new(),
                )
            }
            State::Handshaken {
                mechanism: mechanism @ Mechanism::Scram(scram),
                raw,
            } => {
                let exchange = ScramExchange::start(scram, message).map_err(|e| failed(&e))?;
                let credential = credentials
                    .scram_credential(exchange.user(), scram.name())
                    .await
                    .map_err(|e| failed(&unreadable(e)))?;
                let (exchange, server_first) =
                    exchange.challenge(credential).map_err(|e| failed(&e))?;
                self.state = State::ScramProof {
                    mechanism,
                    raw,
                    exchange,
                };
                Ok(Step::Challenge(server_first))
            }
            State::ScramProof {
                mechanism,
                exchange,
                ..
            } => {
                let (user, server_final) = exchange.finish(message).map_err(|e| failed(&e))?;
                self.complete(mechanism, user, None, settings, server_final)
            }
            State::Start | State::Authenticated => Err(AuthFailure {
                illegal_state: true,
                message: "SaslAuthenticate without a SaslHandshake first".into(),
            }),
        }
    }

    /// Ends a successful exchange: the principal (unchanged by a
    /// re-authentication) and the session's lifetime, which is Kafka's: the
    /// credential's remaining lifetime capped by `connections.max.reauth.ms`,
    /// and none at all when that is unset.
    fn complete(
        &mut self,
        mechanism: Mechanism,
        user: String,
        credential_lifetime_ms: Option<i64>,
        settings: &SaslSettings,
        response: Vec<u8>,
    ) -> Result<Step, AuthFailure> {
        let reauthenticating = self.session_mechanism.is_some();
        if reauthenticating && self.principal.name != user {
            return Err(AuthFailure::failed(format!(
                "re-authentication as {} on a session of {}; a session keeps its principal",
                Principal::user(user),
                self.principal
            )));
        }
        if reauthenticating {
            tracing::debug!(principal = %self.principal, mechanism = mechanism.name(), "re-authenticated");
        } else {
            self.principal = Principal::user(user);
            tracing::debug!(principal = %self.principal, mechanism = mechanism.name(), "authenticated");
        }
        self.session_mechanism = Some(mechanism);
        self.state = State::Authenticated;
        let session_lifetime_ms = match settings.max_reauth {
            None => 0,
            Some(max) => (max.as_millis() as i64)
                .min(credential_lifetime_ms.unwrap_or(i64::MAX))
                // A token within its clock skew: re-authenticate at once.
                .max(1),
        };
        self.expires = (session_lifetime_ms > 0)
            .then(|| Instant::now() + Duration::from_millis(session_lifetime_ms as u64));
        Ok(Step::Complete {
            response,
            session_lifetime_ms,
        })
    }
}

fn unreadable(e: kafscale_metadata::MetadataError) -> String {
    format!("credentials cannot be read ({e}); retry when the metadata store is reachable")
}

/// PLAIN: the password is checked against the user's SCRAM credentials
/// (SHA-512 first), off the async runtime since that is slow by design.
async fn authenticate_plain(
    message: &[u8],
    credentials: &MetadataStore,
) -> Result<String, AuthFailure> {
    let given = plain::parse(message).map_err(|e| AuthFailure::failed(e.to_string()))?;
    let invalid = || {
        AuthFailure::failed(
            "authentication failed: invalid credentials for PLAIN (unknown user or wrong password)",
        )
    };
    let mut found = None;
    for scram in [ScramMechanism::Sha512, ScramMechanism::Sha256] {
        let stored = credentials
            .scram_credential(&given.user, scram.name())
            .await
            .map_err(|e| AuthFailure::failed(unreadable(e)))?;
        if let Some(stored) = stored {
            found = Some((scram, stored));
            break;
        }
    }
    // An unknown user's password is hashed too, against a decoy no password
    // matches: otherwise the answer's delay would tell which users exist.
    // Hashes run a few at a time, so a flood of logins queues instead of
    // taking every core.
    let known = found.is_some();
    let _permit = plain_hashing_slots().acquire().await;
    let password = given.password.clone();
    let matches = tokio::task::spawn_blocking(move || {
        let (scram, stored) = found.unwrap_or_else(|| (ScramMechanism::Sha512, decoy_credential()));
        scram.password_matches(&stored, &password)
    })
    .await
    .unwrap_or(false);
    if matches && known {
        Ok(given.user)
    } else {
        Err(invalid())
    }
}

/// How many PLAIN password hashes may run at once: one per core.
fn plain_hashing_slots() -> &'static tokio::sync::Semaphore {
    static SLOTS: std::sync::OnceLock<tokio::sync::Semaphore> = std::sync::OnceLock::new();
    SLOTS.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        tokio::sync::Semaphore::new(cores)
    })
}

/// A SCRAM-SHA-512 credential of a random password, made once.
fn decoy_credential() -> kafscale_metadata::ScramCredentialRecord {
    static DECOY: std::sync::OnceLock<kafscale_metadata::ScramCredentialRecord> =
        std::sync::OnceLock::new();
    DECOY
        .get_or_init(|| {
            let password = super::scram::random_bytes(32)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>();
            ScramMechanism::Sha512.credential_for_password(&password, super::scram::MIN_ITERATIONS)
        })
        .clone()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use kafscale_metadata::{CredentialChange, FileKv};

    use super::*;
    use crate::security::scram::{client_final, MIN_ITERATIONS};

    #[tokio::test]
    async fn plain_does_the_same_work_for_unknown_users() {
        let (_dir, store) = store_with_user("alice", "secret").await;
        let median_failure = |user: &'static str| {
            let store = store.clone();
            async move {
                let mut times = Vec::new();
                for _ in 0..5 {
                    let message = format!("\0{user}\0wrong-password");
                    let start = std::time::Instant::now();
                    assert!(authenticate_plain(message.as_bytes(), &store)
                        .await
                        .is_err());
                    times.push(start.elapsed());
                }
                times.sort();
                times[2]
            }
        };
        median_failure("nobody").await; // makes the decoy once
        let known = median_failure("alice").await;
        let unknown = median_failure("nobody").await;
        // Without the decoy an unknown user fails in microseconds, a known
        // one after a PBKDF2 of milliseconds.
        assert!(
            unknown * 3 >= known,
            "unknown user answered in {unknown:?}, known user in {known:?}"
        );
    }

    async fn store_with_user(user: &str, password: &str) -> (tempfile::TempDir, MetadataStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = MetadataStore::new(
            Arc::new(FileKv::open(dir.path().join("m.json")).unwrap()),
            "c",
        );
        let m = ScramMechanism::Sha512;
        store
            .alter_scram_credentials(&[CredentialChange::Upsert {
                user: user.into(),
                mechanism: m.name().into(),
                credential: m.credential_for_password(password, MIN_ITERATIONS),
            }])
            .await
            .unwrap();
        (dir, store)
    }

    fn settings(mechanisms: &[Mechanism], max_reauth: Option<Duration>) -> SaslSettings {
        SaslSettings {
            mechanisms: mechanisms.to_vec(),
            max_reauth,
            ..SaslSettings::default()
        }
    }

    async fn scram(
        session: &mut SaslSession,
        settings: &SaslSettings,
        store: &MetadataStore,
        user: &str,
        password: &str,
    ) -> Result<Step, AuthFailure> {
        let m = ScramMechanism::Sha512;
        session
            .handshake(m.name(), 1, &settings.mechanisms)
            .unwrap();
        let bare = format!("n={user},r=clientnonce");
        let server_first = match session
            .authenticate(format!("n,,{bare}").as_bytes(), settings, store)
            .await?
        {
            Step::Challenge(c) => String::from_utf8(c).unwrap(),
            other => panic!("{other:?}"),
        };
        let (final_message, expected) = client_final(m, password, &bare, &server_first);
        let step = session
            .authenticate(final_message.as_bytes(), settings, store)
            .await?;
        if let Step::Complete { response, .. } = &step {
            assert_eq!(response, &expected);
        }
        Ok(step)
    }

    #[tokio::test]
    async fn only_authentication_is_served_until_it_succeeds() {
        let (_dir, store) = store_with_user("alice", "pw").await;
        let settings = settings(&[Mechanism::Scram(ScramMechanism::Sha512)], None);
        let mut session = SaslSession::new(true, Principal::anonymous());
        let now = Instant::now();
        assert_eq!(session.gate(ApiKey::ApiVersions, now), Gate::Serve);
        assert!(matches!(session.gate(ApiKey::Produce, now), Gate::Close(_)));
        assert_eq!(
            session.handshake("GSSAPI", 1, &settings.mechanisms),
            Err(HandshakeError::Unsupported)
        );
        // PLAIN is known but not enabled here.
        assert_eq!(
            session.handshake("PLAIN", 1, &settings.mechanisms),
            Err(HandshakeError::Unsupported)
        );
        let step = scram(&mut session, &settings, &store, "alice", "pw")
            .await
            .unwrap();
        assert!(matches!(
            step,
            Step::Complete {
                session_lifetime_ms: 0,
                ..
            }
        ));
        assert_eq!(session.principal().to_string(), "User:alice");
        assert_eq!(session.gate(ApiKey::Produce, Instant::now()), Gate::Serve);
    }

    #[tokio::test]
    async fn a_wrong_password_fails_with_a_message_that_hides_whether_the_user_exists() {
        let (_dir, store) = store_with_user("alice", "pw").await;
        let settings = settings(
            &[Mechanism::Scram(ScramMechanism::Sha512), Mechanism::Plain],
            None,
        );
        let wrong = scram(
            &mut SaslSession::new(true, Principal::anonymous()),
            &settings,
            &store,
            "alice",
            "nope",
        )
        .await
        .unwrap_err();
        let unknown = scram(
            &mut SaslSession::new(true, Principal::anonymous()),
            &settings,
            &store,
            "mallory",
            "pw",
        )
        .await
        .unwrap_err();
        assert_eq!(wrong, unknown);
        assert!(
            wrong.message.contains("invalid credentials"),
            "{}",
            wrong.message
        );

        for (password, ok) in [("pw", true), ("nope", false)] {
            let mut session = SaslSession::new(true, Principal::anonymous());
            session.handshake("PLAIN", 1, &settings.mechanisms).unwrap();
            let result = session
                .authenticate(format!("\0alice\0{password}").as_bytes(), &settings, &store)
                .await;
            assert_eq!(result.is_ok(), ok);
            if ok {
                assert_eq!(session.principal().name, "alice");
            } else {
                // The failed session serves nothing.
                assert!(matches!(
                    session.gate(ApiKey::Metadata, Instant::now()),
                    Gate::Close(_)
                ));
            }
        }
    }

    #[tokio::test]
    async fn sessions_expire_and_re_authentication_keeps_the_principal() {
        let (_dir, store) = store_with_user("alice", "pw").await;
        let m = Mechanism::Scram(ScramMechanism::Sha512);
        let settings = settings(&[m, Mechanism::Plain], Some(Duration::from_secs(60)));
        let mut session = SaslSession::new(true, Principal::anonymous());
        let step = scram(&mut session, &settings, &store, "alice", "pw")
            .await
            .unwrap();
        assert!(matches!(
            step,
            Step::Complete {
                session_lifetime_ms: 60_000,
                ..
            }
        ));
        let later = Instant::now() + Duration::from_secs(61);
        assert!(matches!(session.gate(ApiKey::Fetch, later), Gate::Close(_)));
        assert_eq!(session.gate(ApiKey::SaslHandshake, later), Gate::Serve);

        // Another mechanism, or v0, may not re-authenticate a session.
        assert!(matches!(
            session.handshake("PLAIN", 1, &settings.mechanisms),
            Err(HandshakeError::IllegalState(_))
        ));
        assert!(matches!(
            session.handshake(m.name(), 0, &settings.mechanisms),
            Err(HandshakeError::IllegalState(_))
        ));
        scram(&mut session, &settings, &store, "alice", "pw")
            .await
            .unwrap();
        assert_eq!(session.gate(ApiKey::Fetch, Instant::now()), Gate::Serve);

        store
            .alter_scram_credentials(&[CredentialChange::Upsert {
                user: "bob".into(),
                mechanism: "SCRAM-SHA-512".into(),
                credential: ScramMechanism::Sha512.credential_for_password("pw", MIN_ITERATIONS),
            }])
            .await
            .unwrap();
        let switched = scram(&mut session, &settings, &store, "bob", "pw")
            .await
            .unwrap_err();
        assert!(
            switched.message.contains("keeps its principal"),
            "{}",
            switched.message
        );
    }

    #[tokio::test]
    async fn handshake_v0_means_raw_tokens_and_non_sasl_listeners_refuse_handshakes() {
        let settings = SaslSettings::default();
        let mut session = SaslSession::new(true, Principal::anonymous());
        session
            .handshake("SCRAM-SHA-256", 0, &settings.mechanisms)
            .unwrap();
        assert!(session.expects_raw_token());
        assert!(matches!(
            session.handshake("SCRAM-SHA-256", 1, &settings.mechanisms),
            Err(HandshakeError::IllegalState(_))
        ));

        let mut plaintext = SaslSession::new(false, Principal::anonymous());
        assert_eq!(plaintext.gate(ApiKey::Produce, Instant::now()), Gate::Serve);
        assert!(matches!(
            plaintext.handshake("SCRAM-SHA-256", 1, &settings.mechanisms),
            Err(HandshakeError::IllegalState(_))
        ));
        let (_dir, store) = store_with_user("a", "b").await;
        let mut fresh = SaslSession::new(true, Principal::anonymous());
        let out = fresh.authenticate(b"n,,n=a,r=x", &settings, &store).await;
        assert!(out.unwrap_err().illegal_state);
        let mut big = SaslSession::new(true, Principal::anonymous());
        big.handshake("SCRAM-SHA-256", 1, &settings.mechanisms)
            .unwrap();
        let huge = vec![b'a'; MAX_SASL_MESSAGE + 1];
        assert!(big.authenticate(&huge, &settings, &store).await.is_err());
    }
}
