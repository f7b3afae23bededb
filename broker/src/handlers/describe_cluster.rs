//! DescribeCluster v0–v1.

use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::{BrokerId, DescribeClusterRequest, DescribeClusterResponse};

use super::str_bytes;
use crate::Broker;

pub fn handle(
    broker: &Broker,
    _req: DescribeClusterRequest,
    version: i16,
) -> DescribeClusterResponse {
    let c = &broker.config;
    let mut resp = DescribeClusterResponse::default()
        .with_cluster_id(str_bytes(c.cluster_id.clone()))
        .with_controller_id(BrokerId(c.node_id))
        .with_brokers(vec![DescribeClusterBroker::default()
            .with_broker_id(BrokerId(c.node_id))
            .with_host(str_bytes(c.advertised_host.clone()))
            .with_port(c.advertised_port)]);
    if version >= 1 {
        resp = resp.with_endpoint_type(1);
    }
    resp
}
