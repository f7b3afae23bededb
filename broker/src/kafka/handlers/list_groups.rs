//! ListGroups v0–v5, with state (v4+) and type (v5+) filters.

use std::sync::Arc;

use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::{GroupId, ListGroupsRequest, ListGroupsResponse};

use super::{allowed, RequestContext};
use super::{group_unavailable, str_bytes};
use crate::security::acl::{Operation, ResourceType, CLUSTER_NAME};
use crate::Broker;

/// Groups of Kafka's classic protocol: the only kind Kafscale runs.
const GROUP_TYPE: &str = "classic";

pub async fn handle(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    req: ListGroupsRequest,
    version: i16,
) -> ListGroupsResponse {
    let summaries = match broker.groups.summaries().await {
        Ok(h) => h,
        Err(_) => return ListGroupsResponse::default().with_error_code(group_unavailable()),
    };
    // DESCRIBE on the cluster lists every group; without it, those the
    // principal may describe (as Kafka filters).
    let all = allowed(
        broker,
        ctx,
        Operation::Describe,
        ResourceType::Cluster,
        CLUSTER_NAME,
    );
    let states: Vec<String> = req.states_filter.iter().map(|s| s.to_lowercase()).collect();
    let types: Vec<String> = req.types_filter.iter().map(|s| s.to_lowercase()).collect();
    let groups = summaries
        .into_iter()
        .filter(|g| all || allowed(broker, ctx, Operation::Describe, ResourceType::Group, &g.id))
        .filter_map(|g| {
            let state = g.state.name();
            if !states.is_empty() && !states.contains(&state.to_lowercase()) {
                return None;
            }
            if !types.is_empty() && !types.iter().any(|t| t == GROUP_TYPE) {
                return None;
            }
            let mut listed = ListedGroup::default()
                .with_group_id(GroupId(str_bytes(g.id)))
                .with_protocol_type(str_bytes(
                    g.protocol_type.unwrap_or_else(|| "consumer".into()),
                ));
            if version >= 4 {
                listed = listed.with_group_state(str_bytes(state));
            }
            if version >= 5 {
                listed = listed.with_group_type(str_bytes(GROUP_TYPE));
            }
            Some(listed)
        })
        .collect();
    ListGroupsResponse::default().with_groups(groups)
}
