//! AlterUserScramCredentials: adds, replaces and deletes SCRAM credentials
//! (`kafka-configs --alter --add-config 'SCRAM-SHA-512=[password=...]'
//! --entity-type users`). The client sends the salted password, never the
//! password; the broker keeps only what the SCRAM server side needs.

use std::collections::{BTreeMap, BTreeSet};

use kafka_protocol::error::ResponseError as E;
use kafka_protocol::messages::alter_user_scram_credentials_response::AlterUserScramCredentialsResult;
use kafka_protocol::messages::{
    AlterUserScramCredentialsRequest, AlterUserScramCredentialsResponse,
};
use kafscale_metadata::CredentialChange;

use super::kafka_error::KafkaError;
use super::{str_bytes, RequestContext};
use crate::security::acl::Operation;
use crate::security::scram::{ScramMechanism, MAX_ITERATIONS, MIN_ITERATIONS};
use crate::Broker;

type Outcome = Result<(), KafkaError>;

/// Bounds on what a credential change may store: the user name is part of
/// its etcd key, and SCRAM salts are tens of bytes.
const MAX_USER_NAME: usize = 1024;
const MAX_SALT: usize = 1024;

/// Validates the request into per-user outcomes and the changes of the
/// users whose every change is acceptable. `existing` holds the stored
/// (user, mechanism) pairs, which deletions must name.
fn plan(
    request: &AlterUserScramCredentialsRequest,
    existing: &BTreeSet<(String, ScramMechanism)>,
) -> (BTreeMap<String, Outcome>, Vec<CredentialChange>) {
    let mut outcomes: BTreeMap<String, Outcome> = BTreeMap::new();
    let mut changes: BTreeMap<String, Vec<CredentialChange>> = BTreeMap::new();
    let mut seen = BTreeSet::new();
    let fail = |outcomes: &mut BTreeMap<String, Outcome>, user: &str, code: E, message: String| {
        // The first failure of a user is the one reported.
        let entry = outcomes.entry(user.to_string()).or_insert(Ok(()));
        if entry.is_ok() {
            *entry = Err(KafkaError::new(code, message));
        }
    };
    let deletions = request
        .deletions
        .iter()
        .map(|d| (d.name.as_str(), d.mechanism, None));
    let upsertions = request
        .upsertions
        .iter()
        .map(|u| (u.name.as_str(), u.mechanism, Some(u)));
    for (user, mechanism_type, upsertion) in deletions.chain(upsertions) {
        outcomes.entry(user.to_string()).or_insert(Ok(()));
        if user.len() > MAX_USER_NAME {
            fail(
                &mut outcomes,
                user,
                E::UnacceptableCredential,
                format!("user names are at most {MAX_USER_NAME} bytes"),
            );
            continue;
        }
        if user.is_empty() {
            fail(
                &mut outcomes,
                user,
                E::UnacceptableCredential,
                "the user name must not be empty".into(),
            );
            continue;
        }
        let Some(mechanism) = ScramMechanism::from_kafka_type(mechanism_type) else {
            fail(&mut outcomes, user, E::UnsupportedSaslMechanism, format!("unknown SCRAM mechanism type {mechanism_type}; use SCRAM-SHA-256 or SCRAM-SHA-512"));
            continue;
        };
        if !seen.insert((user.to_string(), mechanism)) {
            fail(
                &mut outcomes,
                user,
                E::DuplicateResource,
                format!(
                    "{} of '{user}' is altered twice in one request",
                    mechanism.name()
                ),
            );
            continue;
        }
        let change = match upsertion {
            None => {
                if !existing.contains(&(user.to_string(), mechanism)) {
                    fail(
                        &mut outcomes,
                        user,
                        E::ResourceNotFound,
                        format!("'{user}' has no {} credential to delete", mechanism.name()),
                    );
                    continue;
                }
                CredentialChange::Delete {
                    user: user.to_string(),
                    mechanism: mechanism.name().into(),
                }
            }
            Some(u) => {
                let iterations = u.iterations;
                if iterations < MIN_ITERATIONS as i32 || iterations > MAX_ITERATIONS as i32 {
                    fail(&mut outcomes, user, E::UnacceptableCredential, format!("{iterations} iterations is outside {MIN_ITERATIONS}..={MAX_ITERATIONS}"));
                    continue;
                }
                let expected_len = mechanism.salted_password(b"", b"", 1).len();
                if u.salt.is_empty()
                    || u.salt.len() > MAX_SALT
                    || u.salted_password.len() != expected_len
                {
                    fail(&mut outcomes, user, E::UnacceptableCredential, format!("a {} credential needs a salt of 1 to {MAX_SALT} bytes and a {expected_len}-byte salted password", mechanism.name()));
                    continue;
                }
                CredentialChange::Upsert {
                    user: user.to_string(),
                    mechanism: mechanism.name().into(),
                    credential: mechanism.credential(
                        &u.salted_password,
                        &u.salt,
                        iterations as u32,
                    ),
                }
            }
        };
        changes.entry(user.to_string()).or_default().push(change);
    }
    let accepted = changes
        .into_iter()
        .filter(|(user, _)| matches!(outcomes.get(user), Some(Ok(()))))
        .flat_map(|(_, c)| c)
        .collect();
    (outcomes, accepted)
}

pub async fn handle(
    broker: &Broker,
    ctx: &RequestContext,
    request: AlterUserScramCredentialsRequest,
) -> AlterUserScramCredentialsResponse {
    if let Err(KafkaError {
        error: code,
        message,
    }) = super::authorize_cluster(broker, ctx, Operation::Alter)
    {
        let users: BTreeSet<&str> = request
            .deletions
            .iter()
            .map(|d| d.name.as_str())
            .chain(request.upsertions.iter().map(|u| u.name.as_str()))
            .collect();
        return AlterUserScramCredentialsResponse::default().with_results(
            users
                .into_iter()
                .map(|user| {
                    AlterUserScramCredentialsResult::default()
                        .with_user(str_bytes(user))
                        .with_error_code(code.code())
                        .with_error_message(Some(str_bytes(message.clone())))
                })
                .collect(),
        );
    }
    let stored = match broker.metadata.list_scram_credentials().await {
        Ok(list) => Ok(list
            .into_iter()
            .filter_map(|(user, mechanism, _)| {
                ScramMechanism::from_name(&mechanism).map(|m| (user, m))
            })
            .collect()),
        Err(e) => Err(e),
    };
    let (mut outcomes, changes) = match &stored {
        Ok(existing) => plan(&request, existing),
        Err(_) => plan(&request, &BTreeSet::new()),
    };
    let store_error = match stored {
        Err(e) => Some(e),
        Ok(_) => broker
            .metadata
            .alter_scram_credentials(&changes)
            .await
            .err(),
    };
    if let Some(e) = store_error {
        for outcome in outcomes.values_mut() {
            *outcome = Err(KafkaError::new(
                E::RequestTimedOut,
                format!("{e}; retry when the metadata store is reachable"),
            ));
        }
    }
    AlterUserScramCredentialsResponse::default().with_results(
        outcomes
            .into_iter()
            .map(|(user, outcome)| {
                let result = AlterUserScramCredentialsResult::default().with_user(str_bytes(user));
                match outcome {
                    Ok(()) => result,
                    Err(KafkaError { error, message }) => result
                        .with_error_code(error.code())
                        .with_error_message(Some(str_bytes(message))),
                }
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use kafka_protocol::messages::alter_user_scram_credentials_request::{
        ScramCredentialDeletion, ScramCredentialUpsertion,
    };

    use super::*;

    fn upsert(
        user: &str,
        mechanism: i8,
        iterations: i32,
        salted_len: usize,
    ) -> ScramCredentialUpsertion {
        ScramCredentialUpsertion::default()
            .with_name(str_bytes(user))
            .with_mechanism(mechanism)
            .with_iterations(iterations)
            .with_salt(Bytes::from_static(b"salt"))
            .with_salted_password(Bytes::from(vec![7u8; salted_len]))
    }

    fn delete(user: &str, mechanism: i8) -> ScramCredentialDeletion {
        ScramCredentialDeletion::default()
            .with_name(str_bytes(user))
            .with_mechanism(mechanism)
    }

    #[test]
    fn each_user_succeeds_or_fails_as_a_whole_with_kafkas_codes() {
        let existing = BTreeSet::from([("old".to_string(), ScramMechanism::Sha256)]);
        let request = AlterUserScramCredentialsRequest::default()
            .with_deletions(vec![
                delete("old", 1),
                delete("ghost", 2),
                delete("carol", 2),
            ])
            .with_upsertions(vec![
                upsert("alice", 2, 4096, 64),
                upsert("alice", 1, 8192, 32),
                upsert("bob", 1, 1000, 32),
                upsert("carol", 2, 4096, 64),
                upsert("dave", 3, 4096, 64),
                upsert("erin", 1, 4096, 64),
                upsert("", 1, 4096, 32),
            ]);
        let (outcomes, changes) = plan(&request, &existing);
        let code = |user: &str| match &outcomes[user] {
            Ok(()) => 0,
            Err(refusal) => refusal.code(),
        };
        assert_eq!(code("old"), 0);
        assert_eq!(code("alice"), 0);
        assert_eq!(code("ghost"), E::ResourceNotFound.code());
        assert_eq!(code("bob"), E::UnacceptableCredential.code());
        // carol's deletion fails (nothing stored), so her upsert is not applied either.
        assert_eq!(code("carol"), E::ResourceNotFound.code());
        assert_eq!(code("dave"), E::UnsupportedSaslMechanism.code());
        assert_eq!(
            code("erin"),
            E::UnacceptableCredential.code(),
            "wrong salted length"
        );
        assert_eq!(code(""), E::UnacceptableCredential.code());
        let users: Vec<_> = changes
            .iter()
            .map(|c| match c {
                CredentialChange::Upsert {
                    user, mechanism, ..
                }
                | CredentialChange::Delete { user, mechanism } => {
                    (user.as_str(), mechanism.as_str())
                }
            })
            .collect();
        assert_eq!(
            users,
            vec![
                ("alice", "SCRAM-SHA-512"),
                ("alice", "SCRAM-SHA-256"),
                ("old", "SCRAM-SHA-256")
            ]
        );

        let oversized = AlterUserScramCredentialsRequest::default().with_upsertions(vec![
            upsert("salty", 1, 4096, 32).with_salt(Bytes::from(vec![1u8; MAX_SALT + 1])),
            upsert(&"u".repeat(MAX_USER_NAME + 1), 1, 4096, 32),
        ]);
        let (outcomes, changes) = plan(&oversized, &existing);
        assert!(changes.is_empty());
        assert!(outcomes
            .values()
            .all(|o| o.as_ref().unwrap_err().error == E::UnacceptableCredential));

        let twice = AlterUserScramCredentialsRequest::default()
            .with_deletions(vec![delete("old", 1)])
            .with_upsertions(vec![upsert("old", 1, 4096, 32)]);
        let (outcomes, changes) = plan(&twice, &existing);
        assert_eq!(
            outcomes["old"].as_ref().unwrap_err().code(),
            E::DuplicateResource.code()
        );
        assert!(changes.is_empty());
    }
}
