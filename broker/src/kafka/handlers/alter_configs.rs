//! AlterConfigs v0–v2: replaces a topic's whole config set (legacy API).

use std::collections::BTreeMap;
use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::{AlterConfigsRequest, AlterConfigsResponse};

use super::describe_configs::{RESOURCE_BROKER, RESOURCE_TOPIC};
use super::kafka_error::KafkaError;
use super::{modify_error, str_bytes, RequestContext};
use crate::security::acl::Operation;
use crate::Broker;
use kafscale_metadata::topic_rules::validate_topic_configs;

pub async fn handle(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    req: AlterConfigsRequest,
) -> AlterConfigsResponse {
    let mut responses = Vec::with_capacity(req.resources.len());
    for r in req.resources {
        let name = r.resource_name.to_string();
        let configs: BTreeMap<String, String> = r
            .configs
            .iter()
            .filter_map(|c| {
                c.value
                    .as_ref()
                    .map(|v| (c.name.to_string(), v.to_string()))
            })
            .collect();
        let denied =
            super::config_denied(broker, ctx, Operation::AlterConfigs, r.resource_type, &name);
        let outcome = match (r.resource_type, denied) {
            (_, Some(refusal)) => Err(refusal),
            (RESOURCE_TOPIC, None) => broker
                .topics
                .modify(&name, req.validate_only, |record| {
                    validate_topic_configs(&configs)
                        .map_err(|m| KafkaError::new(ResponseError::InvalidConfig, m))?;
                    record.config = configs.clone();
                    Ok(())
                })
                .await
                .map(|_| ())
                .map_err(|e| modify_error(e, &name)),
            (RESOURCE_BROKER, None) => Err(static_broker_configs()),
            (other, None) => Err(KafkaError::new(
                ResponseError::InvalidRequest,
                format!("resource type {other} is not supported; use topics (2)"),
            )),
        };
        let mut resp = AlterConfigsResourceResponse::default()
            .with_resource_type(r.resource_type)
            .with_resource_name(r.resource_name);
        if let Err(KafkaError {
            error,
            message: msg,
        }) = outcome
        {
            resp = resp
                .with_error_code(error.code())
                .with_error_message(Some(str_bytes(msg)));
        }
        responses.push(resp);
    }
    AlterConfigsResponse::default().with_responses(responses)
}

pub fn static_broker_configs() -> KafkaError {
    KafkaError::new(
        ResponseError::InvalidRequest,
        "broker configs are static in Kafscale: set them with flags or environment variables at start",
    )
}
