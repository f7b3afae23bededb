//! DescribeCluster v0–v1.

use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::{BrokerId, DescribeClusterRequest, DescribeClusterResponse};

use super::{str_bytes, RequestContext};
use crate::Broker;

pub fn handle(
    broker: &Broker,
    ctx: &RequestContext,
    _req: DescribeClusterRequest,
    version: i16,
) -> DescribeClusterResponse {
    let brokers = super::metadata::live_brokers(broker)
        .iter()
        .map(|b| {
            let (host, port) = b.endpoint(&ctx.listener);
            DescribeClusterBroker::default()
                .with_broker_id(BrokerId(b.id))
                .with_host(str_bytes(host))
                .with_port(port)
        })
        .collect();
    let mut resp = DescribeClusterResponse::default()
        .with_cluster_id(str_bytes(broker.config.cluster_id.clone()))
        .with_controller_id(BrokerId(super::metadata::controller_id(broker)))
        .with_brokers(brokers);
    if version >= 1 {
        resp = resp.with_endpoint_type(1);
    }
    resp
}
