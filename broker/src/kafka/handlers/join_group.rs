//! JoinGroup v0–v9. Admission registers the member; the response waits until
//! the rebalance completes (or answers at once with an error or
//! MEMBER_ID_REQUIRED).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::FutureExt;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::{JoinGroupRequest, JoinGroupResponse, ResponseKind};

use super::{allowed, group_unavailable, str_bytes, Deferred, RequestContext};
use crate::groups::{GroupError, JoinRequest, JoinResult};
use crate::security::acl::{Operation, ResourceType};
use crate::Broker;

pub async fn handle(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    req: JoinGroupRequest,
    version: i16,
) -> Deferred {
    let reply = move |r: JoinGroupResponse| {
        futures::future::ready(Some(ResponseKind::JoinGroup(r))).boxed()
    };
    let group_id = req.group_id.0.to_string();
    if group_id.is_empty() {
        return reply(
            JoinGroupResponse::default().with_error_code(ResponseError::InvalidGroupId.code()),
        );
    }
    if !allowed(broker, ctx, Operation::Read, ResourceType::Group, &group_id) {
        return reply(
            JoinGroupResponse::default()
                .with_error_code(ResponseError::GroupAuthorizationFailed.code()),
        );
    }
    if !broker.groups.owns(&group_id) {
        return reply(
            JoinGroupResponse::default().with_error_code(ResponseError::NotCoordinator.code()),
        );
    }
    let handle = match broker.groups.group(&group_id, true).await {
        Ok(Some(h)) => h,
        _ => return reply(JoinGroupResponse::default().with_error_code(group_unavailable())),
    };
    // v0 has no rebalance timeout: it equals the session timeout.
    let rebalance_timeout = if version >= 1 {
        req.rebalance_timeout_ms
    } else {
        req.session_timeout_ms
    };
    let join = JoinRequest {
        member_id: req.member_id.to_string(),
        instance_id: req.group_instance_id.as_ref().map(|s| s.to_string()),
        client_id: ctx.client_id.clone(),
        client_host: ctx.client_host.clone(),
        session_timeout: Duration::from_millis(req.session_timeout_ms.max(0) as u64),
        rebalance_timeout: Duration::from_millis(rebalance_timeout.max(0) as u64),
        protocol_type: req.protocol_type.to_string(),
        protocols: req
            .protocols
            .iter()
            // Copied: a slice would pin the whole request frame (up to the
            // largest request) for as long as the member stays.
            .map(|p| (p.name.to_string(), Bytes::copy_from_slice(&p.metadata)))
            .collect(),
        require_known_member_id: version >= 4,
    };
    let client_id = ctx.client_id.clone();
    let rx = {
        broker.groups.update(&handle, |group| {
            group.join(
                join,
                || crate::groups::group::member_id_for(&client_id),
                &broker.groups.settings,
                Instant::now(),
            )
        })
    };
    broker.groups.persist_later(handle);
    async move {
        let result = rx
            .await
            .unwrap_or_else(|_| JoinResult::error("", GroupError::RebalanceInProgress));
        Some(ResponseKind::JoinGroup(response(result, version)))
    }
    .boxed()
}

fn response(r: JoinResult, version: i16) -> JoinGroupResponse {
    let mut resp = JoinGroupResponse::default()
        .with_error_code(r.error.map(GroupError::code).unwrap_or(0))
        .with_generation_id(r.generation)
        .with_leader(str_bytes(r.leader))
        .with_member_id(str_bytes(r.member_id))
        .with_protocol_name(r.protocol.map(str_bytes))
        .with_members(
            r.members
                .into_iter()
                .map(|(id, instance, metadata)| {
                    let m = JoinGroupResponseMember::default()
                        .with_member_id(str_bytes(id))
                        .with_metadata(metadata);
                    if version >= 5 {
                        m.with_group_instance_id(instance.map(str_bytes))
                    } else {
                        m
                    }
                })
                .collect(),
        );
    if version >= 7 {
        resp = resp.with_protocol_type(r.protocol_type.map(str_bytes));
    }
    if version < 7 && resp.protocol_name.is_none() {
        // Before v7 the protocol name is not nullable.
        resp.protocol_name = Some(str_bytes(""));
    }
    resp
}
