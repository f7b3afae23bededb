//! DescribeUserScramCredentials: which users have which SCRAM mechanisms
//! (with iteration counts; never salts or keys).

use std::collections::{BTreeMap, BTreeSet};

use kafka_protocol::error::ResponseError as E;
use kafka_protocol::messages::describe_user_scram_credentials_response::{
    CredentialInfo, DescribeUserScramCredentialsResult,
};
use kafka_protocol::messages::{
    DescribeUserScramCredentialsRequest, DescribeUserScramCredentialsResponse,
};

use super::kafka_error::KafkaError;
use super::{str_bytes, RequestContext};
use crate::security::acl::Operation;
use crate::security::scram::ScramMechanism;
use crate::Broker;

pub async fn handle(
    broker: &Broker,
    ctx: &RequestContext,
    request: DescribeUserScramCredentialsRequest,
) -> DescribeUserScramCredentialsResponse {
    if let Err(KafkaError {
        error: code,
        message,
    }) = super::authorize_cluster(broker, ctx, Operation::Describe)
    {
        return DescribeUserScramCredentialsResponse::default()
            .with_error_code(code.code())
            .with_error_message(Some(str_bytes(message)));
    }
    let stored = match broker.metadata.list_scram_credentials().await {
        Ok(stored) => stored,
        Err(e) => {
            return DescribeUserScramCredentialsResponse::default()
                .with_error_code(E::RequestTimedOut.code())
                .with_error_message(Some(str_bytes(format!(
                    "{e}; retry when the metadata store is reachable"
                ))))
        }
    };
    let mut by_user: BTreeMap<String, Vec<CredentialInfo>> = BTreeMap::new();
    for (user, mechanism, iterations) in stored {
        if let Some(m) = ScramMechanism::from_name(&mechanism) {
            by_user.entry(user).or_default().push(
                CredentialInfo::default()
                    .with_mechanism(m.kafka_type())
                    .with_iterations(iterations as i32),
            );
        }
    }
    let results = match request.users {
        // Null or empty: every user with a credential.
        None => by_user
            .into_iter()
            .map(|(user, infos)| found(user, infos))
            .collect(),
        Some(users) if users.is_empty() => by_user
            .into_iter()
            .map(|(user, infos)| found(user, infos))
            .collect(),
        Some(users) => {
            let mut asked = BTreeSet::new();
            let duplicates: BTreeSet<String> = users
                .iter()
                .filter(|u| !asked.insert(u.name.to_string()))
                .map(|u| u.name.to_string())
                .collect();
            asked
                .into_iter()
                .map(|user| {
                    if duplicates.contains(&user) {
                        failed(
                            user.clone(),
                            E::DuplicateResource,
                            format!("'{user}' is asked for more than once"),
                        )
                    } else {
                        match by_user.remove(&user) {
                            Some(infos) => found(user, infos),
                            None => failed(
                                user.clone(),
                                E::ResourceNotFound,
                                format!("'{user}' has no SCRAM credential"),
                            ),
                        }
                    }
                })
                .collect()
        }
    };
    DescribeUserScramCredentialsResponse::default().with_results(results)
}

fn found(user: String, infos: Vec<CredentialInfo>) -> DescribeUserScramCredentialsResult {
    DescribeUserScramCredentialsResult::default()
        .with_user(str_bytes(user))
        .with_credential_infos(infos)
}

fn failed(user: String, code: E, message: String) -> DescribeUserScramCredentialsResult {
    DescribeUserScramCredentialsResult::default()
        .with_user(str_bytes(user))
        .with_error_code(code.code())
        .with_error_message(Some(str_bytes(message)))
}
