//! CreateAcls v1–v3 (`kafka-acls --add`): stores bindings in etcd; every
//! broker's authorizer follows them.

use kafka_protocol::error::ResponseError as E;
use kafka_protocol::messages::create_acls_response::AclCreationResult;
use kafka_protocol::messages::{CreateAclsRequest, CreateAclsResponse};

use super::kafka_error::KafkaError;
use super::{str_bytes, RequestContext};
use crate::security::acl::{Acl, Operation};
use crate::Broker;

pub async fn handle(
    broker: &Broker,
    ctx: &RequestContext,
    req: CreateAclsRequest,
) -> CreateAclsResponse {
    let fail_all = |code: E, message: String| {
        CreateAclsResponse::default().with_results(
            req.creations
                .iter()
                .map(|_| {
                    AclCreationResult::default()
                        .with_error_code(code.code())
                        .with_error_message(Some(str_bytes(message.clone())))
                })
                .collect(),
        )
    };
    if let Err(KafkaError {
        error: code,
        message,
    }) = super::acl_admin(broker, ctx, Operation::Alter)
    {
        return fail_all(code, message);
    }
    let parsed: Vec<_> = req
        .creations
        .iter()
        .map(|c| {
            Acl::from_parts(
                c.resource_type,
                c.resource_name.as_str(),
                c.resource_pattern_type,
                c.principal.as_str(),
                c.host.as_str(),
                c.operation,
                c.permission_type,
            )
        })
        .collect();
    let valid: Vec<Acl> = parsed
        .iter()
        .filter_map(|p| p.as_ref().ok().cloned())
        .collect();
    let records: Vec<_> = valid.iter().map(Acl::to_record).collect();
    if let Err(e) = broker.metadata.create_acls(&records).await {
        return fail_all(
            E::RequestTimedOut,
            format!("{e}; retry when the metadata store is reachable"),
        );
    }
    broker.authorizer.insert(&valid);
    tracing::info!(principal = %ctx.principal, created = valid.len(), "ACL bindings created");
    CreateAclsResponse::default().with_results(
        parsed
            .into_iter()
            .map(|p| match p {
                Ok(_) => AclCreationResult::default(),
                Err(e) => AclCreationResult::default()
                    .with_error_code(E::InvalidRequest.code())
                    .with_error_message(Some(str_bytes(e.to_string()))),
            })
            .collect(),
    )
}
