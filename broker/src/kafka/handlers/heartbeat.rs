//! Heartbeat v0–v4. Never touches the metadata store.

use std::time::Instant;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{HeartbeatRequest, HeartbeatResponse};

use super::group_unavailable;
use super::{allowed, RequestContext};
use crate::groups::GroupError;
use crate::security::acl::{Operation, ResourceType};
use crate::Broker;

pub async fn handle(
    broker: &Broker,
    ctx: &RequestContext,
    req: HeartbeatRequest,
) -> HeartbeatResponse {
    let group_id = req.group_id.0.as_str();
    if !allowed(broker, ctx, Operation::Read, ResourceType::Group, group_id) {
        return HeartbeatResponse::default()
            .with_error_code(ResponseError::GroupAuthorizationFailed.code());
    }
    if !broker.groups.owns(group_id) {
        return HeartbeatResponse::default().with_error_code(ResponseError::NotCoordinator.code());
    }
    let code = match broker.groups.group(group_id, false).await {
        Ok(Some(h)) => h
            .lock()
            .heartbeat(
                req.member_id.as_str(),
                req.group_instance_id.as_ref().map(|s| s.as_str()),
                req.generation_id,
                Instant::now(),
            )
            .err()
            .map(GroupError::code)
            .unwrap_or(0),
        Ok(None) => GroupError::UnknownMemberId.code(),
        Err(_) => group_unavailable(),
    };
    HeartbeatResponse::default().with_error_code(code)
}
