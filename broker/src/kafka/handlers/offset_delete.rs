//! OffsetDelete v0: deletes committed offsets of partitions the group is not
//! consuming.

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::{OffsetDeleteRequest, OffsetDeleteResponse};

use super::group_unavailable;
use super::{allowed, RequestContext};
use crate::groups::GroupState;
use crate::security::acl::{Operation, ResourceType};
use crate::Broker;

pub async fn handle(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    req: OffsetDeleteRequest,
) -> OffsetDeleteResponse {
    let group_id = req.group_id.0.to_string();
    if !allowed(
        broker,
        ctx,
        Operation::Delete,
        ResourceType::Group,
        &group_id,
    ) {
        return OffsetDeleteResponse::default()
            .with_error_code(ResponseError::GroupAuthorizationFailed.code());
    }
    if !broker.groups.owns(&group_id) {
        return OffsetDeleteResponse::default()
            .with_error_code(ResponseError::NotCoordinator.code());
    }
    let handle = match broker.groups.group(&group_id, false).await {
        Ok(Some(h)) => h,
        Ok(None) => {
            return OffsetDeleteResponse::default()
                .with_error_code(ResponseError::GroupIdNotFound.code())
        }
        Err(_) => return OffsetDeleteResponse::default().with_error_code(group_unavailable()),
    };
    // Topics an active group is subscribed to keep their offsets. The
    // subscription lives in the members' opaque metadata, so an active group
    // protects every topic it has offsets for.
    let active = {
        let g = handle.lock();
        g.state != GroupState::Empty
    };
    let mut doomed = Vec::new();
    let mut topics = Vec::new();
    for t in &req.topics {
        let mut parts = Vec::new();
        for p in &t.partitions {
            let code = if !allowed(
                broker,
                ctx,
                Operation::Read,
                ResourceType::Topic,
                t.name.0.as_str(),
            ) {
                ResponseError::TopicAuthorizationFailed.code()
            } else if active {
                ResponseError::GroupSubscribedToTopic.code()
            } else {
                doomed.push((t.name.0.to_string(), p.partition_index));
                0
            };
            parts.push(
                OffsetDeleteResponsePartition::default()
                    .with_partition_index(p.partition_index)
                    .with_error_code(code),
            );
        }
        topics.push(
            OffsetDeleteResponseTopic::default()
                .with_name(t.name.clone())
                .with_partitions(parts),
        );
    }
    if let Err(_e) = broker.groups.delete_offsets(&handle, &doomed).await {
        return OffsetDeleteResponse::default().with_error_code(group_unavailable());
    }
    OffsetDeleteResponse::default().with_topics(topics)
}
