//! DescribeClientQuotas v0–v1: Kafscale enforces no client quotas, so every
//! filter matches nothing. Served so that Kafka's tools that describe users
//! (`kafka-configs --describe --entity-type users` reads quotas and SCRAM
//! credentials together) work.

use kafka_protocol::messages::{DescribeClientQuotasRequest, DescribeClientQuotasResponse};

use super::kafka_error::KafkaError;
use super::{str_bytes, RequestContext};
use crate::security::acl::Operation;
use crate::Broker;

pub fn handle(
    broker: &Broker,
    ctx: &RequestContext,
    _req: DescribeClientQuotasRequest,
) -> DescribeClientQuotasResponse {
    if let Err(KafkaError {
        error: code,
        message,
    }) = super::authorize_cluster(broker, ctx, Operation::DescribeConfigs)
    {
        return DescribeClientQuotasResponse::default()
            .with_error_code(code.code())
            .with_error_message(Some(str_bytes(message)));
    }
    DescribeClientQuotasResponse::default().with_entries(Some(Vec::new()))
}
