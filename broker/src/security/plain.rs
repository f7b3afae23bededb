//! SASL PLAIN (RFC 4616): `authzid NUL authcid NUL password`, checked
//! against the user's SCRAM credential, so one set of users serves both.

#[derive(Debug, PartialEq, Eq)]
pub struct PlainCredentials {
    pub user: String,
    pub password: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlainError {
    #[error("malformed PLAIN message: expected authzid NUL user NUL password")]
    Malformed,
    #[error("the authorization id must be empty or equal to the user name")]
    AuthorizationId,
}

/// Bounds of RFC 4616 (255 octets per field), which also keep the password
/// hashing a client can ask for small.
const MAX_FIELD: usize = 255;

pub fn parse(message: &[u8]) -> Result<PlainCredentials, PlainError> {
    let text = std::str::from_utf8(message).map_err(|_| PlainError::Malformed)?;
    let mut fields = text.split('\0');
    let (Some(authzid), Some(user), Some(password), None) =
        (fields.next(), fields.next(), fields.next(), fields.next())
    else {
        return Err(PlainError::Malformed);
    };
    if user.is_empty()
        || password.is_empty()
        || [authzid, user, password]
            .iter()
            .any(|f| f.len() > MAX_FIELD)
    {
        return Err(PlainError::Malformed);
    }
    if !authzid.is_empty() && authzid != user {
        return Err(PlainError::AuthorizationId);
    }
    Ok(PlainCredentials {
        user: user.to_string(),
        password: password.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_three_fields() {
        assert_eq!(
            parse(b"\0alice\0pw").unwrap(),
            PlainCredentials {
                user: "alice".into(),
                password: "pw".into()
            }
        );
        assert!(parse(b"alice\0alice\0pw").is_ok());
        assert_eq!(parse(b"bob\0alice\0pw"), Err(PlainError::AuthorizationId));
        for bad in [
            &b""[..],
            b"\0alice",
            b"\0\0pw",
            b"\0alice\0",
            b"\0a\0b\0c",
            b"\0a\0\xff",
        ] {
            assert_eq!(parse(bad), Err(PlainError::Malformed), "{bad:?}");
        }
        let long = format!("\0alice\0{}", "x".repeat(256));
        assert_eq!(parse(long.as_bytes()), Err(PlainError::Malformed));
    }
}
