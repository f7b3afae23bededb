//! OffsetFetch v1–v9: committed offsets, -1 where nothing is committed; several
//! groups per request from v8.

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{GroupId, OffsetFetchRequest, OffsetFetchResponse, TopicName};
use kafscale_metadata::CommittedOffset;

use super::{allowed, RequestContext};
use super::{group_unavailable, str_bytes};
use crate::security::acl::{Operation, ResourceType};
use crate::Broker;

/// (topic, its partitions' error code, [(partition, committed)]) for one group.
type Fetched = Vec<(String, i16, Vec<(i32, Option<CommittedOffset>)>)>;

async fn fetch_group(
    broker: &Broker,
    ctx: &RequestContext,
    group_id: &str,
    topics: Option<Vec<(String, Vec<i32>)>>,
) -> Result<Fetched, i16> {
    if !allowed(
        broker,
        ctx,
        Operation::Describe,
        ResourceType::Group,
        group_id,
    ) {
        return Err(ResponseError::GroupAuthorizationFailed.code());
    }
    let may_describe =
        |topic: &str| allowed(broker, ctx, Operation::Describe, ResourceType::Topic, topic);
    if !broker.groups.owns(group_id) {
        return Err(ResponseError::NotCoordinator.code());
    }
    let committed = match broker.groups.group(group_id, false).await {
        Ok(Some(h)) => h.offsets().clone(),
        Ok(None) => Default::default(),
        Err(_) => return Err(group_unavailable()),
    };
    Ok(match topics {
        Some(list) => list
            .into_iter()
            .map(|(t, parts)| {
                if !may_describe(&t) {
                    let entries = parts.into_iter().map(|p| (p, None)).collect();
                    return (t, ResponseError::TopicAuthorizationFailed.code(), entries);
                }
                let entries = parts
                    .into_iter()
                    .map(|p| (p, committed.get(&(t.clone(), p)).cloned()))
                    .collect();
                (t, 0, entries)
            })
            .collect(),
        // Null topics: everything the group committed that the principal
        // may see.
        None => {
            let mut out: Fetched = Vec::new();
            for ((t, p), o) in committed {
                match out.last_mut() {
                    Some((last, _, entries)) if *last == t => entries.push((p, Some(o))),
                    _ if !may_describe(&t) => {}
                    _ => out.push((t, 0, vec![(p, Some(o))])),
                }
            }
            out
        }
    })
}

fn value(o: &Option<CommittedOffset>) -> (i64, i32, String) {
    match o {
        Some(o) => (
            o.offset,
            o.leader_epoch,
            o.metadata.clone().unwrap_or_default(),
        ),
        None => (-1, -1, String::new()),
    }
}

pub async fn handle(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    req: OffsetFetchRequest,
    version: i16,
) -> OffsetFetchResponse {
    if version >= 8 {
        let mut groups = Vec::with_capacity(req.groups.len());
        for g in &req.groups {
            let topics = g.topics.as_ref().map(|ts| {
                ts.iter()
                    .map(|t| (t.name.0.to_string(), t.partition_indexes.clone()))
                    .collect()
            });
            let out = OffsetFetchResponseGroup::default().with_group_id(g.group_id.clone());
            groups.push(
                match fetch_group(broker, ctx, g.group_id.0.as_str(), topics).await {
                    Err(code) => out.with_error_code(code),
                    Ok(fetched) => out.with_topics(
                        fetched
                            .into_iter()
                            .map(|(t, code, parts)| {
                                OffsetFetchResponseTopics::default()
                                    .with_name(TopicName(str_bytes(t)))
                                    .with_partitions(
                                        parts
                                            .iter()
                                            .map(|(p, o)| {
                                                let (offset, epoch, meta) = value(o);
                                                OffsetFetchResponsePartitions::default()
                                                    .with_partition_index(*p)
                                                    .with_error_code(code)
                                                    .with_committed_offset(offset)
                                                    .with_committed_leader_epoch(epoch)
                                                    .with_metadata(Some(str_bytes(meta)))
                                            })
                                            .collect(),
                                    )
                            })
                            .collect(),
                    ),
                },
            );
        }
        return OffsetFetchResponse::default().with_groups(groups);
    }
    let topics = req.topics.as_ref().map(|ts| {
        ts.iter()
            .map(|t| (t.name.0.to_string(), t.partition_indexes.clone()))
            .collect()
    });
    let GroupId(group) = &req.group_id;
    match fetch_group(broker, ctx, group.as_str(), topics).await {
        Err(code) => {
            let resp = OffsetFetchResponse::default();
            if version >= 2 {
                resp.with_error_code(code)
            } else {
                resp
            }
        }
        Ok(fetched) => OffsetFetchResponse::default().with_topics(
            fetched
                .into_iter()
                .map(|(t, code, parts)| {
                    OffsetFetchResponseTopic::default()
                        .with_name(TopicName(str_bytes(t)))
                        .with_partitions(
                            parts
                                .iter()
                                .map(|(p, o)| {
                                    let (offset, epoch, meta) = value(o);
                                    let r = OffsetFetchResponsePartition::default()
                                        .with_partition_index(*p)
                                        .with_error_code(code)
                                        .with_committed_offset(offset)
                                        .with_metadata(Some(str_bytes(meta)));
                                    if version >= 5 {
                                        r.with_committed_leader_epoch(epoch)
                                    } else {
                                        r
                                    }
                                })
                                .collect(),
                        )
                })
                .collect(),
        ),
    }
}
