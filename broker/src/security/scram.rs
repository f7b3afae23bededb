//! SCRAM-SHA-256 and SCRAM-SHA-512 (RFC 5802, RFC 7677) as Kafka speaks
//! them: no channel binding, no authorization id other than the user, and
//! credentials kept as salt, iterations, StoredKey and ServerKey.
//!
//! [`ScramExchange`] is the server's side of one exchange, without I/O: the
//! caller looks the user's credential up between the two client messages.

use aws_lc_rs::constant_time;
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
pub use kafscale_metadata::scram::{random_bytes, ScramMechanism, MAX_ITERATIONS, MIN_ITERATIONS};
use kafscale_metadata::ScramCredentialRecord;

/// Why an exchange failed. Messages go to the client (Kafka sends them in
/// SaslAuthenticate's error message), so none says whether a user exists.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScramError {
    #[error("malformed SCRAM message: {0}")]
    Malformed(&'static str),
    #[error("SCRAM channel binding is not supported; configure the client without it")]
    ChannelBinding,
    #[error("SCRAM extension '{0}' is not supported (delegation tokens are not)")]
    Extension(String),
    #[error("the authorization id must be empty or equal to the user name")]
    AuthorizationId,
    #[error("authentication failed: invalid credentials for {0} (unknown user or wrong password)")]
    InvalidCredentials(&'static str),
}

/// The server's side of one SCRAM exchange.
#[derive(Debug)]
pub struct ScramExchange {
    mechanism: ScramMechanism,
    user: String,
    client_first_bare: String,
    client_nonce: String,
}

/// After the server-first message: waiting for the client's proof.
#[derive(Debug)]
pub struct AwaitingProof {
    mechanism: ScramMechanism,
    user: String,
    client_nonce: String,
    nonce: String,
    credential: ScramCredentialRecord,
    auth_message_start: String,
}

/// Decodes a `saslname` (RFC 5802: `=2C` is `,`, `=3D` is `=`).
fn decode_saslname(s: &str) -> Result<String, ScramError> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(at) = rest.find('=') {
        out.push_str(&rest[..at]);
        match rest.get(at..at + 3) {
            Some("=2C") => out.push(','),
            Some("=3D") => out.push('='),
            _ => return Err(ScramError::Malformed("bad escape in user name")),
        }
        rest = &rest[at + 3..];
    }
    out.push_str(rest);
    Ok(out)
}

impl ScramExchange {
    /// Reads the client-first message.
    pub fn start(mechanism: ScramMechanism, message: &[u8]) -> Result<Self, ScramError> {
        let message =
            std::str::from_utf8(message).map_err(|_| ScramError::Malformed("not UTF-8"))?;
        // gs2-header: channel-binding flag, authzid, then the bare message.
        let mut parts = message.splitn(3, ',');
        let flag = parts.next().unwrap_or_default();
        let authzid = parts.next().ok_or(ScramError::Malformed("no gs2 header"))?;
        let bare = parts.next().ok_or(ScramError::Malformed("no gs2 header"))?;
        match flag {
            "n" | "y" => {}
            f if f.starts_with("p=") => return Err(ScramError::ChannelBinding),
            _ => return Err(ScramError::Malformed("bad channel binding flag")),
        }
        let mut user = None;
        let mut nonce = None;
        for attribute in bare.split(',') {
            match attribute.split_once('=') {
                Some(("n", v)) => user = Some(decode_saslname(v)?),
                Some(("r", v)) => nonce = Some(v.to_string()),
                Some(("m", _)) => return Err(ScramError::Malformed("mandatory extension")),
                Some((key, _)) => return Err(ScramError::Extension(key.to_string())),
                None => return Err(ScramError::Malformed("attribute without '='")),
            }
        }
        let user = user.ok_or(ScramError::Malformed("no user name"))?;
        let client_nonce = nonce.ok_or(ScramError::Malformed("no nonce"))?;
        if user.is_empty() || client_nonce.is_empty() {
            return Err(ScramError::Malformed("empty user name or nonce"));
        }
        if let Some(authzid) = authzid.strip_prefix("a=") {
            if decode_saslname(authzid)? != user {
                return Err(ScramError::AuthorizationId);
            }
        } else if !authzid.is_empty() {
            return Err(ScramError::Malformed("bad authorization id"));
        }
        Ok(Self {
            mechanism,
            user,
            client_first_bare: bare.to_string(),
            client_nonce,
        })
    }

    pub fn user(&self) -> &str {
        &self.user
    }

    /// The server-first message, given the user's stored credential (none:
    /// the exchange fails as a wrong password would).
    pub fn challenge(
        self,
        credential: Option<ScramCredentialRecord>,
    ) -> Result<(AwaitingProof, Vec<u8>), ScramError> {
        let credential = credential.ok_or(ScramError::InvalidCredentials(self.mechanism.name()))?;
        let nonce = format!("{}{}", self.client_nonce, BASE64.encode(random_bytes(24)));
        let server_first = format!(
            "r={nonce},s={},i={}",
            BASE64.encode(&credential.salt),
            credential.iterations
        );
        let auth_message_start = format!("{},{server_first}", self.client_first_bare);
        Ok((
            AwaitingProof {
                mechanism: self.mechanism,
                user: self.user,
                client_nonce: self.client_nonce,
                nonce,
                credential,
                auth_message_start,
            },
            server_first.into_bytes(),
        ))
    }
}

impl AwaitingProof {
    /// Checks the client-final message; on success returns the user and the
    /// server-final message (the server's signature).
    pub fn finish(self, message: &[u8]) -> Result<(String, Vec<u8>), ScramError> {
        let message =
            std::str::from_utf8(message).map_err(|_| ScramError::Malformed("not UTF-8"))?;
        let (without_proof, proof) = message
            .rsplit_once(",p=")
            .ok_or(ScramError::Malformed("no proof"))?;
        let mut binding = None;
        let mut nonce = None;
        for attribute in without_proof.split(',') {
            match attribute.split_once('=') {
                Some(("c", v)) => binding = Some(v),
                Some(("r", v)) => nonce = Some(v),
                Some((key, _)) => return Err(ScramError::Extension(key.to_string())),
                None => return Err(ScramError::Malformed("attribute without '='")),
            }
        }
        // Without channel binding the client echoes its gs2 header, "n,," or
        // "y,," (possibly with the authzid), base64-encoded.
        let binding = binding.ok_or(ScramError::Malformed("no channel binding"))?;
        let header = BASE64
            .decode(binding)
            .map_err(|_| ScramError::Malformed("channel binding is not base64"))?;
        if !(header.starts_with(b"n,") || header.starts_with(b"y,")) {
            return Err(ScramError::ChannelBinding);
        }
        // librdkafka before 2.6.1 sends its own nonce once more in front of
        // the combined one (client nonce + client nonce + server nonce).
        // Kafka 3.9 accepts that too; it still carries this exchange's fresh
        // server nonce, so a replayed message fails all the same.
        let doubled = format!("{}{}", self.client_nonce, self.nonce);
        if nonce != Some(self.nonce.as_str()) && nonce != Some(doubled.as_str()) {
            return Err(ScramError::Malformed("nonce does not match"));
        }
        let proof = BASE64
            .decode(proof)
            .map_err(|_| ScramError::Malformed("proof is not base64"))?;
        let m = self.mechanism;
        let auth_message = format!("{},{without_proof}", self.auth_message_start);
        let client_signature = m.hmac(&self.credential.stored_key, auth_message.as_bytes());
        if proof.len() != client_signature.len() {
            return Err(ScramError::InvalidCredentials(m.name()));
        }
        let client_key: Vec<u8> = proof
            .iter()
            .zip(&client_signature)
            .map(|(a, b)| a ^ b)
            .collect();
        if constant_time::verify_slices_are_equal(&m.hash(&client_key), &self.credential.stored_key)
            .is_err()
        {
            return Err(ScramError::InvalidCredentials(m.name()));
        }
        let server_signature = m.hmac(&self.credential.server_key, auth_message.as_bytes());
        Ok((
            self.user,
            format!("v={}", BASE64.encode(server_signature)).into_bytes(),
        ))
    }
}

#[cfg(test)]
/// The client's side, as RFC 5802 describes it, to drive the server.
pub(crate) fn client_final(
    m: ScramMechanism,
    password: &str,
    client_first_bare: &str,
    server_first: &str,
) -> (String, Vec<u8>) {
    let nonce = server_first
        .split(',')
        .find_map(|kv| kv.strip_prefix("r="))
        .unwrap()
        .to_string();
    client_final_with_nonce(m, password, client_first_bare, server_first, &nonce)
}

/// [`client_final`] sending `nonce` instead of the server's.
#[cfg(test)]
pub(crate) fn client_final_with_nonce(
    m: ScramMechanism,
    password: &str,
    client_first_bare: &str,
    server_first: &str,
    nonce: &str,
) -> (String, Vec<u8>) {
    let fields: std::collections::HashMap<_, _> = server_first
        .split(',')
        .filter_map(|kv| kv.split_once('='))
        .collect();
    let salt = BASE64.decode(fields["s"]).unwrap();
    let iterations: u32 = fields["i"].parse().unwrap();
    let salted = m.salted_password(password.as_bytes(), &salt, iterations);
    let client_key = m.hmac(&salted, b"Client Key");
    let stored_key = m.hash(&client_key);
    let without_proof = format!("c=biws,r={nonce}");
    let auth_message = format!("{client_first_bare},{server_first},{without_proof}");
    let signature = m.hmac(&stored_key, auth_message.as_bytes());
    let proof: Vec<u8> = client_key
        .iter()
        .zip(&signature)
        .map(|(a, b)| a ^ b)
        .collect();
    let server_key = m.hmac(&salted, b"Server Key");
    let expected_server_final = format!(
        "v={}",
        BASE64.encode(m.hmac(&server_key, auth_message.as_bytes()))
    );
    (
        format!("{without_proof},p={}", BASE64.encode(proof)),
        expected_server_final.into_bytes(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exchange(
        m: ScramMechanism,
        stored_password: &str,
        tried: &str,
    ) -> Result<String, ScramError> {
        let credential = m.credential_for_password(stored_password, MIN_ITERATIONS);
        let bare = "n=us=3Der=2Cx,r=fyko+d2lbbFgONRv9qkxdawL";
        let first = ScramExchange::start(m, format!("n,,{bare}").as_bytes())?;
        assert_eq!(first.user(), "us=er,x");
        let (awaiting, server_first) = first.challenge(Some(credential))?;
        let server_first = String::from_utf8(server_first).unwrap();
        assert!(server_first.starts_with("r=fyko+d2lbbFgONRv9qkxdawL"));
        let (final_message, expected) = client_final(m, tried, bare, &server_first);
        let (user, server_final) = awaiting.finish(final_message.as_bytes())?;
        assert_eq!(server_final, expected, "the client can verify the server");
        Ok(user)
    }

    #[test]
    fn the_right_password_authenticates_with_both_mechanisms() {
        for m in ScramMechanism::ALL {
            assert_eq!(exchange(m, "s3cret", "s3cret").unwrap(), "us=er,x");
            assert_eq!(
                exchange(m, "s3cret", "wrong"),
                Err(ScramError::InvalidCredentials(m.name()))
            );
        }
    }

    #[test]
    fn an_unknown_user_fails_like_a_wrong_password() {
        let first = ScramExchange::start(ScramMechanism::Sha256, b"n,,n=nobody,r=abc").unwrap();
        assert_eq!(
            first.challenge(None).unwrap_err(),
            ScramError::InvalidCredentials("SCRAM-SHA-256")
        );
    }

    #[test]
    fn what_kafka_does_not_support_is_refused_by_name() {
        let m = ScramMechanism::Sha512;
        assert_eq!(
            ScramExchange::start(m, b"p=tls-unique,,n=u,r=abc").unwrap_err(),
            ScramError::ChannelBinding
        );
        assert_eq!(
            ScramExchange::start(m, b"n,,n=u,r=abc,tokenauth=true").unwrap_err(),
            ScramError::Extension("tokenauth".into())
        );
        assert_eq!(
            ScramExchange::start(m, b"n,a=admin,n=u,r=abc").unwrap_err(),
            ScramError::AuthorizationId
        );
        assert!(ScramExchange::start(m, b"n,a=u,n=u,r=abc").is_ok());
        for garbage in [
            &b""[..],
            b"n,,",
            b"n,,n=u",
            b"n,,r=x",
            b"x,,n=u,r=a",
            b"n,,n=a=1,r=x",
            b"\xff,,",
        ] {
            assert!(ScramExchange::start(m, garbage).is_err(), "{garbage:?}");
        }
    }

    #[test]
    fn older_librdkafkas_doubled_client_nonce_is_accepted() {
        let m = ScramMechanism::Sha256;
        let bare = "n=u,r=abc";
        // librdkafka < 2.6.1 puts "abc" once more in front of the server's
        // r; anything else in front is refused.
        for (prefix, accepted) in [("abc", true), ("xyz", false)] {
            let first = ScramExchange::start(m, format!("n,,{bare}").as_bytes()).unwrap();
            let (awaiting, server_first) = first
                .challenge(Some(m.credential_for_password("pw", MIN_ITERATIONS)))
                .unwrap();
            let server_first = String::from_utf8(server_first).unwrap();
            let server_nonce = server_first
                .split(',')
                .next()
                .unwrap()
                .strip_prefix("r=")
                .unwrap();
            let nonce = format!("{prefix}{server_nonce}");
            let (final_message, _) = client_final_with_nonce(m, "pw", bare, &server_first, &nonce);
            assert_eq!(
                awaiting.finish(final_message.as_bytes()).is_ok(),
                accepted,
                "{prefix}"
            );
        }
    }

    #[test]
    fn a_final_message_with_another_nonce_or_garbage_fails() {
        let m = ScramMechanism::Sha256;
        for bad in [
            &b"c=biws,r=other,p=AAAA"[..],
            b"c=biws,r=abc",
            b"",
            b"c=eCws,r=abc,p=AA",
            b"c=biws,r=abc,p=!!",
        ] {
            let first = ScramExchange::start(m, b"n,,n=u,r=abc").unwrap();
            let (awaiting, _) = first
                .challenge(Some(m.credential_for_password("p", MIN_ITERATIONS)))
                .unwrap();
            assert!(awaiting.finish(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn plain_passwords_are_checked_against_the_scram_credential() {
        let m = ScramMechanism::Sha512;
        let credential = m.credential_for_password("letmein", MIN_ITERATIONS);
        assert!(m.password_matches(&credential, "letmein"));
        assert!(!m.password_matches(&credential, "letmein "));
        // A credential made from a client's salted password (as
        // AlterUserScramCredentials sends it) is the same credential.
        let salted = m.salted_password(b"letmein", &credential.salt, credential.iterations);
        assert_eq!(
            m.credential(&salted, &credential.salt, credential.iterations),
            credential
        );
    }
}
