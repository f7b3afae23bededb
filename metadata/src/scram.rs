//! SCRAM credentials (RFC 5802, RFC 7677) as Kafka stores them: the hash
//! functions of SCRAM-SHA-256 and SCRAM-SHA-512, and the salt, iteration
//! count, StoredKey and ServerKey derived from a password. Shared by the
//! broker (which runs the exchange) and the operator (which creates users).

use std::num::NonZeroU32;

use aws_lc_rs::{constant_time, digest, hmac, pbkdf2, rand};

use crate::ScramCredentialRecord;

/// Kafka's bounds on a credential's iteration count.
pub const MIN_ITERATIONS: u32 = 4096;
pub const MAX_ITERATIONS: u32 = 16384;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ScramMechanism {
    Sha256,
    Sha512,
}

impl ScramMechanism {
    pub const ALL: [ScramMechanism; 2] = [ScramMechanism::Sha256, ScramMechanism::Sha512];

    pub fn name(self) -> &'static str {
        match self {
            ScramMechanism::Sha256 => "SCRAM-SHA-256",
            ScramMechanism::Sha512 => "SCRAM-SHA-512",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.name() == name)
    }

    /// The mechanism's number in DescribeUserScramCredentials and
    /// AlterUserScramCredentials.
    pub fn kafka_type(self) -> i8 {
        match self {
            ScramMechanism::Sha256 => 1,
            ScramMechanism::Sha512 => 2,
        }
    }

    pub fn from_kafka_type(t: i8) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.kafka_type() == t)
    }

    fn hmac_algorithm(self) -> hmac::Algorithm {
        match self {
            ScramMechanism::Sha256 => hmac::HMAC_SHA256,
            ScramMechanism::Sha512 => hmac::HMAC_SHA512,
        }
    }

    fn digest_algorithm(self) -> &'static digest::Algorithm {
        match self {
            ScramMechanism::Sha256 => &digest::SHA256,
            ScramMechanism::Sha512 => &digest::SHA512,
        }
    }

    fn pbkdf2_algorithm(self) -> pbkdf2::Algorithm {
        match self {
            ScramMechanism::Sha256 => pbkdf2::PBKDF2_HMAC_SHA256,
            ScramMechanism::Sha512 => pbkdf2::PBKDF2_HMAC_SHA512,
        }
    }

    fn output_len(self) -> usize {
        self.digest_algorithm().output_len()
    }

    pub fn hmac(self, key: &[u8], message: &[u8]) -> Vec<u8> {
        hmac::sign(&hmac::Key::new(self.hmac_algorithm(), key), message)
            .as_ref()
            .to_vec()
    }

    pub fn hash(self, data: &[u8]) -> Vec<u8> {
        digest::digest(self.digest_algorithm(), data)
            .as_ref()
            .to_vec()
    }

    /// Hi(password, salt, i) of RFC 5802: what a client derives, and what
    /// Kafka's AlterUserScramCredentials carries instead of the password.
    /// Deliberately slow (thousands of HMACs): call it off the async runtime.
    pub fn salted_password(self, password: &[u8], salt: &[u8], iterations: u32) -> Vec<u8> {
        let mut out = vec![0u8; self.output_len()];
        let rounds = NonZeroU32::new(iterations).unwrap_or(NonZeroU32::MIN);
        pbkdf2::derive(self.pbkdf2_algorithm(), rounds, salt, password, &mut out);
        out
    }

    /// The stored form of a credential given its salted password.
    pub fn credential(
        self,
        salted_password: &[u8],
        salt: &[u8],
        iterations: u32,
    ) -> ScramCredentialRecord {
        let client_key = self.hmac(salted_password, b"Client Key");
        ScramCredentialRecord {
            salt: salt.to_vec(),
            iterations,
            stored_key: self.hash(&client_key),
            server_key: self.hmac(salted_password, b"Server Key"),
        }
    }

    /// A new credential for `password` with a random salt.
    pub fn credential_for_password(self, password: &str, iterations: u32) -> ScramCredentialRecord {
        let salt = random_bytes(32);
        let salted = self.salted_password(password.as_bytes(), &salt, iterations);
        self.credential(&salted, &salt, iterations)
    }

    /// Whether `password` is the one `credential` was made from (SASL PLAIN
    /// checks passwords against the SCRAM credentials). Slow, like
    /// [`ScramMechanism::salted_password`].
    pub fn password_matches(self, credential: &ScramCredentialRecord, password: &str) -> bool {
        let salted =
            self.salted_password(password.as_bytes(), &credential.salt, credential.iterations);
        let expected = self.credential(&salted, &credential.salt, credential.iterations);
        constant_time::verify_slices_are_equal(&expected.stored_key, &credential.stored_key).is_ok()
    }
}

pub fn random_bytes(n: usize) -> Vec<u8> {
    let mut out = vec![0u8; n];
    // The system generator failing leaves no safe way on; zeros would be
    // predictable, so this is one of the few places that may not continue.
    if rand::fill(&mut out).is_err() {
        panic!("the system random number generator failed");
    }
    out
}
