//! FindCoordinator v0–v5: this broker for the groups it coordinates (batched
//! keys from v4); transaction coordinators do not exist.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};
use kafka_protocol::protocol::StrBytes;

use super::str_bytes;
use crate::Broker;

const GROUP: i8 = 0;

fn lookup(broker: &Broker, key: &StrBytes, key_type: i8) -> Coordinator {
    let c = &broker.config;
    let base = Coordinator::default()
        .with_key(key.clone())
        .with_node_id(BrokerId(-1))
        .with_port(-1);
    if key_type != GROUP {
        return base
            .with_error_code(ResponseError::TransactionalIdAuthorizationFailed.code())
            .with_error_message(Some(str_bytes(
                "transactions are not supported by Kafscale; unset transactional.id",
            )));
    }
    if !broker.groups.owns(key.as_str()) {
        return base.with_error_code(ResponseError::CoordinatorNotAvailable.code());
    }
    base.with_node_id(BrokerId(c.node_id))
        .with_host(str_bytes(c.advertised_host.clone()))
        .with_port(c.advertised_port)
}

pub fn handle(
    broker: &Broker,
    req: FindCoordinatorRequest,
    version: i16,
) -> FindCoordinatorResponse {
    if version >= 4 {
        let coordinators = req
            .coordinator_keys
            .iter()
            .map(|k| lookup(broker, k, req.key_type))
            .collect();
        return FindCoordinatorResponse::default().with_coordinators(coordinators);
    }
    let c = lookup(broker, &req.key, req.key_type);
    let mut resp = FindCoordinatorResponse::default()
        .with_error_code(c.error_code)
        .with_node_id(c.node_id)
        .with_host(c.host)
        .with_port(c.port);
    if version >= 1 {
        resp = resp.with_error_message(c.error_message);
    }
    resp
}
