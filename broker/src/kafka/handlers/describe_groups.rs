//! DescribeGroups v0–v5: state, protocol, and members with client id, host,
//! metadata and assignment.

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::{DescribeGroupsRequest, DescribeGroupsResponse};

use super::{allowed, RequestContext};
use super::{group_unavailable, str_bytes};
use crate::security::acl::{Operation, ResourceType};
use crate::Broker;

pub async fn handle(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    req: DescribeGroupsRequest,
    version: i16,
) -> DescribeGroupsResponse {
    let mut groups = Vec::with_capacity(req.groups.len());
    for id in req.groups {
        let base = DescribedGroup::default().with_group_id(id.clone());
        if !allowed(
            broker,
            ctx,
            Operation::Describe,
            ResourceType::Group,
            id.0.as_str(),
        ) {
            groups.push(base.with_error_code(ResponseError::GroupAuthorizationFailed.code()));
            continue;
        }
        if !broker.groups.owns(id.0.as_str()) {
            groups.push(base.with_error_code(ResponseError::NotCoordinator.code()));
            continue;
        }
        let described = match broker.groups.group(id.0.as_str(), false).await {
            Err(_) => base.with_error_code(group_unavailable()),
            // Kafka describes an unknown group as Dead with no members.
            Ok(None) => base.with_group_state(str_bytes("Dead")),
            Ok(Some(h)) => {
                let g = h.lock();
                let protocol = g.protocol.clone().unwrap_or_default();
                let members = g
                    .members
                    .values()
                    .map(|m| {
                        let d = DescribedGroupMember::default()
                            .with_member_id(str_bytes(m.id.clone()))
                            .with_client_id(str_bytes(m.client_id.clone()))
                            .with_client_host(str_bytes(m.client_host.clone()))
                            .with_member_metadata(m.metadata_for(&protocol))
                            .with_member_assignment(m.assignment.clone());
                        if version >= 4 {
                            d.with_group_instance_id(m.instance_id.clone().map(str_bytes))
                        } else {
                            d
                        }
                    })
                    .collect();
                base.with_group_state(str_bytes(g.state.name()))
                    .with_protocol_type(str_bytes(g.protocol_type.clone().unwrap_or_default()))
                    .with_protocol_data(str_bytes(protocol))
                    .with_members(members)
            }
        };
        groups.push(described);
    }
    DescribeGroupsResponse::default().with_groups(groups)
}
