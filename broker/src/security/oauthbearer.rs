//! SASL OAUTHBEARER (RFC 7628, KIP-255): the client sends a JWT, which the
//! broker verifies against keys it was given as files: a JWKS document
//! (what an identity provider publishes) or one PEM public key. Nothing is
//! fetched over the network; when the provider rotates its keys the files
//! are rewritten (a mounted Secret or ConfigMap) and reloaded.

use std::time::Duration;

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};

/// What a token must carry to be accepted (Kafka's
/// `sasl.oauthbearer.expected.*`, `sub.claim.name` and `clock.skew.seconds`).
#[derive(Debug, Clone)]
pub struct TokenRules {
    pub expected_issuer: Option<String>,
    pub expected_audience: Vec<String>,
    /// The claim naming the principal.
    pub principal_claim: String,
    pub clock_skew: Duration,
}

impl Default for TokenRules {
    fn default() -> Self {
        Self {
            expected_issuer: None,
            expected_audience: Vec::new(),
            principal_claim: "sub".into(),
            clock_skew: Duration::from_secs(30),
        }
    }
}

struct VerificationKey {
    id: Option<String>,
    key: DecodingKey,
    algorithms: &'static [Algorithm],
}

const RSA_ALGORITHMS: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
];

/// The keys tokens are verified with. Only public-key algorithms: a shared
/// secret in a file every broker reads would let any of them mint tokens.
pub struct TokenKeys(Vec<VerificationKey>);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("not a JWKS document ({0})")]
    Jwks(String),
    #[error("JWKS key {0}: {1}")]
    JwksKey(String, String),
    #[error("the JWKS document has no RSA, EC (P-256, P-384) or Ed25519 public key")]
    NoUsableKey,
    #[error("not a PEM RSA, EC or Ed25519 public key")]
    Pem,
}

impl TokenKeys {
    /// Keys from a JWKS document (`{"keys": [...]}`).
    pub fn from_jwks(json: &[u8]) -> Result<Self, KeyError> {
        let set: JwkSet =
            serde_json::from_slice(json).map_err(|e| KeyError::Jwks(e.to_string()))?;
        let mut keys = Vec::new();
        for jwk in &set.keys {
            let name = jwk
                .common
                .key_id
                .clone()
                .unwrap_or_else(|| "without kid".into());
            let algorithms: &'static [Algorithm] = match &jwk.algorithm {
                AlgorithmParameters::RSA(_) => RSA_ALGORITHMS,
                AlgorithmParameters::EllipticCurve(p) => match p.curve {
                    EllipticCurve::P256 => &[Algorithm::ES256],
                    EllipticCurve::P384 => &[Algorithm::ES384],
                    _ => continue,
                },
                AlgorithmParameters::OctetKeyPair(_) => &[Algorithm::EdDSA],
                // Symmetric keys: see the type's comment.
                AlgorithmParameters::OctetKey(_) => continue,
            };
            let key = DecodingKey::from_jwk(jwk)
                .map_err(|e| KeyError::JwksKey(name.clone(), e.to_string()))?;
            keys.push(VerificationKey {
                id: jwk.common.key_id.clone(),
                key,
                algorithms,
            });
        }
        if keys.is_empty() {
            return Err(KeyError::NoUsableKey);
        }
        Ok(Self(keys))
    }

    /// One PEM public key (RSA, EC or Ed25519).
    pub fn from_pem(pem: &[u8]) -> Result<Self, KeyError> {
        let (key, algorithms): (DecodingKey, &'static [Algorithm]) =
            if let Ok(k) = DecodingKey::from_rsa_pem(pem) {
                (k, RSA_ALGORITHMS)
            } else if let Ok(k) = DecodingKey::from_ec_pem(pem) {
                (k, &[Algorithm::ES256, Algorithm::ES384])
            } else if let Ok(k) = DecodingKey::from_ed_pem(pem) {
                (k, &[Algorithm::EdDSA])
            } else {
                return Err(KeyError::Pem);
            };
        Ok(Self(vec![VerificationKey {
            id: None,
            key,
            algorithms,
        }]))
    }
}

/// A verified token: who it names and until when it is valid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedToken {
    pub principal: String,
    /// Unix seconds.
    pub expires_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("malformed OAUTHBEARER message: {0}")]
    Malformed(&'static str),
    #[error("invalid token: {0}")]
    Invalid(String),
    #[error("the token has expired; get a new one from the identity provider")]
    Expired,
    #[error("the token is not valid yet (nbf); check the clocks")]
    NotYetValid,
    #[error("the token's issuer is not the expected '{0}'")]
    Issuer(String),
    #[error("the token's audience does not include any of {0:?}")]
    Audience(Vec<String>),
    #[error("the token has no '{0}' claim, which this broker requires (its expected issuer or audience is configured); have the identity provider include it")]
    MissingClaim(String),
    #[error("the token has no string claim '{0}' to name the principal")]
    NoPrincipal(String),
    #[error("no configured key verifies this token (kid {kid:?}, alg {alg:?}); check the broker's JWKS or public key file")]
    UnknownKey { kid: Option<String>, alg: Algorithm },
}

/// Extracts the bearer token from the client's first message:
/// `gs2-header \x01 auth=Bearer <token> \x01 [key=value \x01]* \x01`.
pub fn bearer_token(message: &[u8]) -> Result<&str, TokenError> {
    let text = std::str::from_utf8(message).map_err(|_| TokenError::Malformed("not UTF-8"))?;
    let (gs2, rest) = text
        .split_once('\x01')
        .ok_or(TokenError::Malformed("no key-value pairs"))?;
    if !(gs2.starts_with("n,") || gs2.starts_with("y,")) {
        return Err(TokenError::Malformed("channel binding is not supported"));
    }
    let pairs = rest
        .strip_suffix("\x01\x01")
        .or_else(|| rest.strip_suffix('\x01'))
        .ok_or(TokenError::Malformed("not terminated"))?;
    let mut token = None;
    for pair in pairs.split('\x01') {
        if let Some(auth) = pair.strip_prefix("auth=") {
            let value = auth
                .strip_prefix("Bearer ")
                .or_else(|| auth.strip_prefix("bearer "))
                .ok_or(TokenError::Malformed("auth is not 'Bearer <token>'"))?;
            token = Some(value.trim());
        }
        // Other pairs are SASL extensions; Kafka ignores those it does not know.
    }
    match token {
        Some(t) if !t.is_empty() => Ok(t),
        _ => Err(TokenError::Malformed("no auth=Bearer token")),
    }
}

/// Verifies `token`'s signature and claims.
pub fn verify(
    token: &str,
    keys: &TokenKeys,
    rules: &TokenRules,
) -> Result<VerifiedToken, TokenError> {
    let header =
        jsonwebtoken::decode_header(token).map_err(|e| TokenError::Invalid(e.to_string()))?;
    let candidates = keys.0.iter().filter(|k| {
        k.algorithms.contains(&header.alg)
            && (header.kid.is_none() || k.id.is_none() || k.id == header.kid)
    });
    let mut validation = Validation::new(header.alg);
    validation.leeway = rules.clock_skew.as_secs();
    validation.validate_nbf = true;
    // A configured issuer or audience makes its claim required: without
    // that, a token the same identity provider signed for another
    // application (no `aud`) or with no `iss` would pass as if it matched.
    let mut required = vec!["exp"];
    if let Some(issuer) = &rules.expected_issuer {
        validation.set_issuer(&[issuer]);
        required.push("iss");
    }
    if rules.expected_audience.is_empty() {
        validation.validate_aud = false;
    } else {
        validation.set_audience(&rules.expected_audience);
        required.push("aud");
    }
    validation.set_required_spec_claims(&required);
    let mut last_error = None;
    for candidate in candidates {
        match jsonwebtoken::decode::<serde_json::Map<String, serde_json::Value>>(
            token,
            &candidate.key,
            &validation,
        ) {
            Ok(data) => {
                let principal = data
                    .claims
                    .get(&rules.principal_claim)
                    .and_then(|v| v.as_str())
                    .filter(|s| !s.is_empty())
                    .ok_or_else(|| TokenError::NoPrincipal(rules.principal_claim.clone()))?;
                let expires_at = data
                    .claims
                    .get("exp")
                    .and_then(|v| v.as_f64())
                    .map(|e| e as i64)
                    .unwrap_or(0);
                return Ok(VerifiedToken {
                    principal: principal.to_string(),
                    expires_at,
                });
            }
            Err(e) => {
                use jsonwebtoken::errors::ErrorKind as K;
                let mapped = match e.kind() {
                    K::ExpiredSignature => TokenError::Expired,
                    K::ImmatureSignature => TokenError::NotYetValid,
                    K::InvalidIssuer => {
                        TokenError::Issuer(rules.expected_issuer.clone().unwrap_or_default())
                    }
                    K::InvalidAudience => TokenError::Audience(rules.expected_audience.clone()),
                    K::MissingRequiredClaim(claim) => TokenError::MissingClaim(claim.clone()),
                    // Another key may verify it (a rotation overlaps keys).
                    K::InvalidSignature => {
                        last_error.get_or_insert(TokenError::UnknownKey {
                            kid: header.kid.clone(),
                            alg: header.alg,
                        });
                        continue;
                    }
                    _ => TokenError::Invalid(e.to_string()),
                };
                return Err(mapped);
            }
        }
    }
    Err(last_error.unwrap_or(TokenError::UnknownKey {
        kid: header.kid,
        alg: header.alg,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_is_read_from_the_client_message() {
        assert_eq!(
            bearer_token(b"n,,\x01auth=Bearer abc.def.ghi\x01\x01").unwrap(),
            "abc.def.ghi"
        );
        assert_eq!(
            bearer_token(b"n,a=alice,\x01host=x\x01auth=Bearer t\x01traceId=1\x01\x01").unwrap(),
            "t"
        );
        for bad in [
            &b""[..],
            b"n,,",
            b"p=x,,\x01auth=Bearer t\x01\x01",
            b"n,,\x01auth=Basic t\x01\x01",
            b"n,,\x01auth=Bearer \x01\x01",
            b"n,,\x01host=x\x01\x01",
            b"n,,\x01auth=Bearer t",
        ] {
            assert!(bearer_token(bad).is_err(), "{bad:?}");
        }
    }

    use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
    use jsonwebtoken::{EncodingKey, Header};

    struct Issuer {
        encoding: EncodingKey,
        public: Vec<u8>,
    }

    fn issuer() -> Issuer {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&aws_lc_rs::rand::SystemRandom::new()).unwrap();
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
        Issuer {
            encoding: EncodingKey::from_ed_der(pkcs8.as_ref()),
            public: pair.public_key().as_ref().to_vec(),
        }
    }

    fn keys_of(issuers: &[&Issuer]) -> TokenKeys {
        TokenKeys(
            issuers
                .iter()
                .map(|i| VerificationKey {
                    id: None,
                    key: DecodingKey::from_ed_der(&i.public),
                    algorithms: &[Algorithm::EdDSA],
                })
                .collect(),
        )
    }

    fn token(by: &Issuer, claims: serde_json::Value) -> String {
        jsonwebtoken::encode(&Header::new(Algorithm::EdDSA), &claims, &by.encoding).unwrap()
    }

    fn now() -> i64 {
        crate::now_ms() / 1000
    }

    #[test]
    fn signed_tokens_are_verified_with_their_claims() {
        let idp = issuer();
        let keys = keys_of(&[&issuer(), &idp]);
        let rules = TokenRules {
            expected_issuer: Some("https://idp.example".into()),
            expected_audience: vec!["kafscale".into()],
            ..TokenRules::default()
        };
        let good = serde_json::json!({"sub": "svc-orders", "exp": now() + 600,
            "iss": "https://idp.example", "aud": "kafscale"});
        let verified = verify(&token(&idp, good.clone()), &keys, &rules).unwrap();
        assert_eq!(verified.principal, "svc-orders");
        assert_eq!(verified.expires_at, now() + 600);

        let with = |patch: serde_json::Value| {
            let mut claims = good.clone();
            for (k, v) in patch.as_object().unwrap() {
                if v.is_null() {
                    claims.as_object_mut().unwrap().remove(k);
                } else {
                    claims[k] = v.clone();
                }
            }
            verify(&token(&idp, claims), &keys, &rules)
        };
        assert_eq!(
            with(serde_json::json!({"exp": now() - 120})),
            Err(TokenError::Expired)
        );
        // Within the clock skew a just-expired token still passes.
        assert!(with(serde_json::json!({"exp": now() - 5})).is_ok());
        assert_eq!(
            with(serde_json::json!({"nbf": now() + 600})),
            Err(TokenError::NotYetValid)
        );
        assert!(matches!(
            with(serde_json::json!({"iss": "https://evil"})),
            Err(TokenError::Issuer(_))
        ));
        assert!(matches!(
            with(serde_json::json!({"aud": "other"})),
            Err(TokenError::Audience(_))
        ));
        assert_eq!(
            with(serde_json::json!({"sub": null})),
            Err(TokenError::NoPrincipal("sub".into()))
        );
        assert_eq!(
            with(serde_json::json!({"exp": null})),
            Err(TokenError::MissingClaim("exp".into()))
        );
        // With an issuer and an audience configured, a token lacking either
        // claim (one minted for another application) is refused.
        assert_eq!(
            with(serde_json::json!({"iss": null})),
            Err(TokenError::MissingClaim("iss".into()))
        );
        assert_eq!(
            with(serde_json::json!({"aud": null})),
            Err(TokenError::MissingClaim("aud".into()))
        );
        assert!(matches!(
            with(serde_json::json!({"aud": null, "iss": null})),
            Err(TokenError::MissingClaim(_))
        ));
        // Without configured expectations the claims stay optional.
        let open_rules = TokenRules::default();
        let mut bare = good.clone();
        bare.as_object_mut().unwrap().remove("iss");
        bare.as_object_mut().unwrap().remove("aud");
        assert!(verify(&token(&idp, bare), &keys, &open_rules).is_ok());

        // Signed by a key the broker does not have.
        let stranger = issuer();
        assert!(matches!(
            verify(&token(&stranger, good.clone()), &keys, &rules),
            Err(TokenError::UnknownKey { .. })
        ));
        // A token signed with a shared secret is never accepted.
        let hs = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &good,
            &EncodingKey::from_secret(b"guess"),
        )
        .unwrap();
        assert!(matches!(
            verify(&hs, &keys, &rules),
            Err(TokenError::UnknownKey { .. })
        ));
        assert!(matches!(
            verify("not.a.token", &keys, &rules),
            Err(TokenError::Invalid(_))
        ));
    }

    #[test]
    fn key_files_that_are_not_keys_are_named() {
        assert!(matches!(
            TokenKeys::from_jwks(b"{}"),
            Err(KeyError::Jwks(_))
        ));
        assert_eq!(
            TokenKeys::from_jwks(br#"{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}"#).err(),
            Some(KeyError::NoUsableKey)
        );
        assert_eq!(
            TokenKeys::from_pem(b"-----BEGIN NOTHING-----").err(),
            Some(KeyError::Pem)
        );
    }
}
