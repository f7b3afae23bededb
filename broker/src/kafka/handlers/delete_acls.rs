//! DeleteAcls v1–v3 (`kafka-acls --remove`): removes the bindings each
//! filter matches and reports them.

use kafka_protocol::error::ResponseError as E;
use kafka_protocol::messages::delete_acls_response::{
    DeleteAclsFilterResult, DeleteAclsMatchingAcl,
};
use kafka_protocol::messages::{DeleteAclsRequest, DeleteAclsResponse};

use super::kafka_error::KafkaError;
use super::{str_bytes, RequestContext};
use crate::security::acl::{Acl, AclFilter, Operation};
use crate::Broker;

pub async fn handle(
    broker: &Broker,
    ctx: &RequestContext,
    req: DeleteAclsRequest,
) -> DeleteAclsResponse {
    let failed = |code: E, message: &str| {
        DeleteAclsFilterResult::default()
            .with_error_code(code.code())
            .with_error_message(Some(str_bytes(message)))
    };
    if let Err(KafkaError {
        error: code,
        message,
    }) = super::acl_admin(broker, ctx, Operation::Alter)
    {
        return DeleteAclsResponse::default()
            .with_filter_results(req.filters.iter().map(|_| failed(code, &message)).collect());
    }
    // Matched against etcd, not this broker's copy: what is deleted is
    // what is stored, even if a binding has not reached this broker yet.
    let stored: Vec<Acl> = match broker.metadata.list_acls().await {
        Ok(records) => records
            .iter()
            .filter_map(|r| Acl::from_record(r).ok())
            .collect(),
        Err(e) => {
            let message = format!("{e}; retry when the metadata store is reachable");
            return DeleteAclsResponse::default().with_filter_results(
                req.filters
                    .iter()
                    .map(|_| failed(E::RequestTimedOut, &message))
                    .collect(),
            );
        }
    };
    let mut results = Vec::with_capacity(req.filters.len());
    for f in req.filters {
        let filter = AclFilter::from_wire(
            f.resource_type_filter,
            f.resource_name_filter.as_deref(),
            f.pattern_type_filter,
            f.principal_filter.as_deref(),
            f.host_filter.as_deref(),
            f.operation,
            f.permission_type,
        );
        let matched: Vec<Acl> = stored
            .iter()
            .filter(|a| filter.matches(a))
            .cloned()
            .collect();
        let records: Vec<_> = matched.iter().map(Acl::to_record).collect();
        if let Err(e) = broker.metadata.delete_acls(&records).await {
            results.push(failed(
                E::RequestTimedOut,
                &format!("{e}; retry when the metadata store is reachable"),
            ));
            continue;
        }
        broker.authorizer.remove(&matched);
        tracing::info!(principal = %ctx.principal, deleted = matched.len(), "ACL bindings deleted");
        results.push(
            DeleteAclsFilterResult::default().with_matching_acls(
                matched
                    .into_iter()
                    .map(|a| {
                        DeleteAclsMatchingAcl::default()
                            .with_resource_type(a.resource_type.code())
                            .with_resource_name(str_bytes(a.resource_name))
                            .with_pattern_type(a.pattern_type.code())
                            .with_principal(str_bytes(a.principal))
                            .with_host(str_bytes(a.host))
                            .with_operation(a.operation.code())
                            .with_permission_type(a.permission.code())
                    })
                    .collect(),
            ),
        );
    }
    DeleteAclsResponse::default().with_filter_results(results)
}
