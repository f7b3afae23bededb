//! OffsetCommit v2–v9. Offsets are in the metadata store before the answer.
//! Commits from outside the group (generation -1, no member id) are accepted
//! while the group has no members, as in Kafka.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::{OffsetCommitRequest, OffsetCommitResponse};
use kafscale_metadata::CommittedOffset;

use super::group_unavailable;
use super::{allowed, RequestContext};
use crate::groups::{GroupError, GroupState};
use crate::security::acl::{Operation, ResourceType};
use crate::Broker;

fn respond(req: &OffsetCommitRequest, code_for: impl Fn(&str, i32) -> i16) -> OffsetCommitResponse {
    OffsetCommitResponse::default().with_topics(
        req.topics
            .iter()
            .map(|t| {
                OffsetCommitResponseTopic::default()
                    .with_name(t.name.clone())
                    .with_partitions(
                        t.partitions
                            .iter()
                            .map(|p| {
                                OffsetCommitResponsePartition::default()
                                    .with_partition_index(p.partition_index)
                                    .with_error_code(code_for(t.name.0.as_str(), p.partition_index))
                            })
                            .collect(),
                    )
            })
            .collect(),
    )
}

pub async fn handle(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    req: OffsetCommitRequest,
) -> OffsetCommitResponse {
    let group_id = req.group_id.0.to_string();
    if !allowed(broker, ctx, Operation::Read, ResourceType::Group, &group_id) {
        return respond(&req, |_, _| ResponseError::GroupAuthorizationFailed.code());
    }
    let may_read = |topic: &str| allowed(broker, ctx, Operation::Read, ResourceType::Topic, topic);
    if !broker.groups.owns(&group_id) {
        return respond(&req, |_, _| ResponseError::NotCoordinator.code());
    }
    let handle = match broker.groups.group(&group_id, true).await {
        Ok(Some(h)) => h,
        _ => return respond(&req, |_, _| group_unavailable()),
    };
    let generation = req.generation_id_or_member_epoch;
    let member_id = req.member_id.to_string();
    let instance = req.group_instance_id.as_ref().map(|s| s.to_string());
    let check = {
        let g = handle.lock();
        if generation >= 0 || !member_id.is_empty() || instance.is_some() {
            g.validate_member(&member_id, instance.as_deref())
                .and_then(|_| {
                    if generation != g.generation {
                        Err(GroupError::IllegalGeneration)
                    } else if g.state == GroupState::CompletingRebalance {
                        Err(GroupError::RebalanceInProgress)
                    } else {
                        Ok(())
                    }
                })
        } else if g.state != GroupState::Empty {
            // An active group's offsets belong to its members.
            Err(GroupError::UnknownMemberId)
        } else {
            Ok(())
        }
    };
    if let Err(e) = check {
        return respond(&req, |_, _| e.code());
    }

    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    // Kafka measures offset.metadata.max.bytes in UTF-16 units (a Java
    // string's length); so do we, so both refuse the same commits.
    let max_metadata = broker.groups.settings.offset_metadata_max_bytes;
    let too_large = |metadata: &Option<kafka_protocol::protocol::StrBytes>| {
        metadata
            .as_ref()
            .is_some_and(|m| m.len() > max_metadata && m.encode_utf16().count() > max_metadata)
    };
    let mut offsets = Vec::new();
    for t in req.topics.iter().filter(|t| may_read(t.name.0.as_str())) {
        let Some(topic) = broker.topics.get(t.name.0.as_str()) else {
            continue;
        };
        for p in &t.partitions {
            if topic.partition(p.partition_index).is_some() && !too_large(&p.committed_metadata) {
                offsets.push((
                    (t.name.0.to_string(), p.partition_index),
                    CommittedOffset {
                        offset: p.committed_offset,
                        leader_epoch: p.committed_leader_epoch,
                        metadata: p.committed_metadata.as_ref().map(|m| m.to_string()),
                        commit_ms: now,
                    },
                ));
            }
        }
    }
    let oversized: std::collections::HashSet<(&str, i32)> = req
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .filter(|p| too_large(&p.committed_metadata))
                .map(move |p| (t.name.0.as_str(), p.partition_index))
        })
        .collect();
    let stored = broker.groups.commit(&handle, offsets).await;
    respond(&req, |topic, partition| {
        let exists = broker
            .topics
            .get(topic)
            .is_some_and(|t| t.partition(partition).is_some());
        match (&stored, exists) {
            _ if !may_read(topic) => ResponseError::TopicAuthorizationFailed.code(),
            (_, false) => ResponseError::UnknownTopicOrPartition.code(),
            _ if oversized.contains(&(topic, partition)) => {
                ResponseError::OffsetMetadataTooLarge.code()
            }
            (Err(_), true) => group_unavailable(),
            (Ok(()), true) => 0,
        }
    })
}
