//! SyncGroup v0–v5: the leader's assignment is handed to every member exactly
//! as sent, so any client-side assignor works.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use futures::FutureExt;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{ResponseKind, SyncGroupRequest, SyncGroupResponse};

use super::{allowed, RequestContext};
use super::{group_unavailable, str_bytes, Deferred};
use crate::groups::GroupError;
use crate::security::acl::{Operation, ResourceType};
use crate::Broker;

pub async fn handle(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    req: SyncGroupRequest,
    version: i16,
) -> Deferred {
    let reply = move |r: SyncGroupResponse| {
        futures::future::ready(Some(ResponseKind::SyncGroup(r))).boxed()
    };
    let group_id = req.group_id.0.to_string();
    if !allowed(broker, ctx, Operation::Read, ResourceType::Group, &group_id) {
        return reply(
            SyncGroupResponse::default()
                .with_error_code(ResponseError::GroupAuthorizationFailed.code()),
        );
    }
    if !broker.groups.owns(&group_id) {
        return reply(
            SyncGroupResponse::default().with_error_code(ResponseError::NotCoordinator.code()),
        );
    }
    let handle = match broker.groups.group(&group_id, false).await {
        Ok(Some(h)) => h,
        Ok(None) => {
            return reply(
                SyncGroupResponse::default().with_error_code(GroupError::UnknownMemberId.code()),
            )
        }
        Err(_) => return reply(SyncGroupResponse::default().with_error_code(group_unavailable())),
    };
    let (rx, protocol_type, protocol) = broker.groups.update(&handle, |g| {
        let rx = g.sync(
            req.member_id.as_str(),
            req.group_instance_id.as_ref().map(|s| s.as_str()),
            req.generation_id,
            // Copied: a slice would keep the whole request frame alive for
            // as long as the group keeps the assignment.
            req.assignments
                .iter()
                .map(|a| {
                    (
                        a.member_id.to_string(),
                        Bytes::copy_from_slice(&a.assignment),
                    )
                })
                .collect(),
            &broker.groups.settings,
            Instant::now(),
        );
        (rx, g.protocol_type.clone(), g.protocol.clone())
    });
    broker.groups.persist_later(handle);
    async move {
        let result = rx.await.unwrap_or(Err(GroupError::RebalanceInProgress));
        let mut resp = match result {
            Ok(assignment) => SyncGroupResponse::default().with_assignment(assignment),
            Err(e) => SyncGroupResponse::default().with_error_code(e.code()),
        };
        if version >= 5 {
            resp = resp
                .with_protocol_type(protocol_type.map(str_bytes))
                .with_protocol_name(protocol.map(str_bytes));
        }
        Some(ResponseKind::SyncGroup(resp))
    }
    .boxed()
}
