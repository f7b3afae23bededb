//! DeleteGroups v0–v2: only empty groups; their committed offsets go too.

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::{DeleteGroupsRequest, DeleteGroupsResponse};

use super::group_unavailable;
use super::{allowed, RequestContext};
use crate::groups::GroupState;
use crate::security::acl::{Operation, ResourceType};
use crate::Broker;

pub async fn handle(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    req: DeleteGroupsRequest,
) -> DeleteGroupsResponse {
    let mut results = Vec::with_capacity(req.groups_names.len());
    for id in req.groups_names {
        let code = if !allowed(
            broker,
            ctx,
            Operation::Delete,
            ResourceType::Group,
            id.0.as_str(),
        ) {
            ResponseError::GroupAuthorizationFailed.code()
        } else if !broker.groups.owns(id.0.as_str()) {
            ResponseError::NotCoordinator.code()
        } else {
            match broker.groups.group(id.0.as_str(), false).await {
                Err(_) => group_unavailable(),
                Ok(None) => ResponseError::GroupIdNotFound.code(),
                Ok(Some(h)) => {
                    let empty = h.lock().state == GroupState::Empty;
                    if !empty {
                        ResponseError::NonEmptyGroup.code()
                    } else if broker.groups.delete(&h).await.is_err() {
                        group_unavailable()
                    } else {
                        0
                    }
                }
            }
        };
        results.push(
            DeletableGroupResult::default()
                .with_group_id(id)
                .with_error_code(code),
        );
    }
    DeleteGroupsResponse::default().with_results(results)
}
