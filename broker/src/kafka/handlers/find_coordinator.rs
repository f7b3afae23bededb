//! FindCoordinator v0–v5: the live broker leading the group's coordinator
//! slot (batched keys from v4); transaction coordinators do not exist.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};
use kafka_protocol::protocol::StrBytes;

use super::{allowed, group_denied, str_bytes, RequestContext};
use crate::security::acl::{Operation, ResourceType};
use crate::Broker;

const GROUP: i8 = 0;

fn lookup(broker: &Broker, ctx: &RequestContext, key: &StrBytes, key_type: i8) -> Coordinator {
    let base = Coordinator::default()
        .with_key(key.clone())
        .with_node_id(BrokerId(-1))
        .with_port(-1);
    if key_type != GROUP {
        return base
            .with_error_code(ResponseError::TransactionalIdAuthorizationFailed.code())
            .with_error_message(Some(str_bytes(
                "transactions are not supported by Kafscale; unset transactional.id",
            )));
    }
    if !allowed(
        broker,
        ctx,
        Operation::Describe,
        ResourceType::Group,
        key.as_str(),
    ) {
        return base
            .with_error_code(ResponseError::GroupAuthorizationFailed.code())
            .with_error_message(Some(str_bytes(group_denied(
                ctx,
                Operation::Describe,
                key.as_str(),
            ))));
    }
    match broker.groups.coordinator_of(key.as_str()) {
        Some(b) => {
            let (host, port) = b.endpoint(&ctx.listener);
            base.with_node_id(BrokerId(b.id))
                .with_host(str_bytes(host))
                .with_port(port)
        }
        None => base
            .with_error_code(ResponseError::CoordinatorNotAvailable.code())
            .with_error_message(Some(str_bytes(
                "the group's coordinator is moving to another broker; retry shortly",
            ))),
    }
}

pub fn handle(
    broker: &Broker,
    ctx: &RequestContext,
    req: FindCoordinatorRequest,
    version: i16,
) -> FindCoordinatorResponse {
    if version >= 4 {
        let coordinators = req
            .coordinator_keys
            .iter()
            .map(|k| lookup(broker, ctx, k, req.key_type))
            .collect();
        return FindCoordinatorResponse::default().with_coordinators(coordinators);
    }
    let c = lookup(broker, ctx, &req.key, req.key_type);
    let mut resp = FindCoordinatorResponse::default()
        .with_error_code(c.error_code)
        .with_node_id(c.node_id)
        .with_host(c.host)
        .with_port(c.port);
    if version >= 1 {
        resp = resp.with_error_message(c.error_message);
    }
    resp
}
