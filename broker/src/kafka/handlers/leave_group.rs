//! LeaveGroup v0–v5 (several members at once from v3).

use std::sync::Arc;
use std::time::Instant;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::{LeaveGroupRequest, LeaveGroupResponse};

use super::group_unavailable;
use super::{allowed, RequestContext};
use crate::groups::GroupError;
use crate::security::acl::{Operation, ResourceType};
use crate::Broker;

pub async fn handle(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    req: LeaveGroupRequest,
    version: i16,
) -> LeaveGroupResponse {
    let group_id = req.group_id.0.to_string();
    if !allowed(broker, ctx, Operation::Read, ResourceType::Group, &group_id) {
        return LeaveGroupResponse::default()
            .with_error_code(ResponseError::GroupAuthorizationFailed.code());
    }
    if !broker.groups.owns(&group_id) {
        return LeaveGroupResponse::default().with_error_code(ResponseError::NotCoordinator.code());
    }
    let handle = match broker.groups.group(&group_id, false).await {
        Ok(Some(h)) => h,
        Ok(None) => {
            return LeaveGroupResponse::default()
                .with_error_code(GroupError::UnknownMemberId.code())
        }
        Err(_) => return LeaveGroupResponse::default().with_error_code(group_unavailable()),
    };
    let leaving: Vec<(String, Option<String>)> = if version >= 3 {
        req.members
            .iter()
            .map(|m| {
                (
                    m.member_id.to_string(),
                    m.group_instance_id.as_ref().map(|s| s.to_string()),
                )
            })
            .collect()
    } else {
        vec![(req.member_id.to_string(), None)]
    };
    let results: Vec<(String, Option<String>, Result<String, GroupError>)> =
        broker.groups.update(&handle, |g| {
            leaving
                .into_iter()
                .map(|(id, instance)| {
                    let r = g.leave(&id, instance.as_deref(), Instant::now());
                    (id, instance, r)
                })
                .collect()
        });
    broker.groups.persist(&handle).await;
    if version >= 3 {
        let members = results
            .into_iter()
            .map(|(id, instance, r)| {
                MemberResponse::default()
                    .with_member_id(super::str_bytes(id))
                    .with_group_instance_id(instance.map(super::str_bytes))
                    .with_error_code(r.err().map(GroupError::code).unwrap_or(0))
            })
            .collect();
        LeaveGroupResponse::default().with_members(members)
    } else {
        let code = results
            .into_iter()
            .find_map(|(_, _, r)| r.err())
            .map(GroupError::code)
            .unwrap_or(0);
        LeaveGroupResponse::default().with_error_code(code)
    }
}
