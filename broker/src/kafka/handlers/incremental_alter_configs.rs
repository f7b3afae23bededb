//! IncrementalAlterConfigs v0–v1: SET, DELETE, APPEND and SUBTRACT on topic
//! configs, validated against the supported set.

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::{IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse};
use kafscale_metadata::TopicRecord;

use super::alter_configs::static_broker_configs;
use super::describe_configs::{RESOURCE_BROKER, RESOURCE_TOPIC};
use super::kafka_error::KafkaError;
use super::{modify_error, str_bytes, RequestContext};
use crate::security::acl::Operation;
use crate::Broker;
use kafscale_metadata::topic_rules::{
    topic_config_def, topic_config_value, validate_topic_config, validate_topic_configs, ConfigType,
};

const SET: i8 = 0;
const DELETE: i8 = 1;
const APPEND: i8 = 2;
const SUBTRACT: i8 = 3;

type Change = (String, i8, Option<String>);

fn apply(record: &mut TopicRecord, changes: &[Change]) -> Result<(), KafkaError> {
    let invalid = |m: String| KafkaError::new(ResponseError::InvalidConfig, m);
    for (name, op, value) in changes {
        let def = topic_config_def(name).ok_or_else(|| {
            invalid(
                validate_topic_config(name, "")
                    .err()
                    .unwrap_or_else(|| format!("unknown config {name}")),
            )
        })?;
        match *op {
            SET => {
                let v = value
                    .clone()
                    .ok_or_else(|| invalid(format!("SET {name} needs a value")))?;
                validate_topic_config(name, &v).map_err(invalid)?;
                record.config.insert(name.clone(), v);
            }
            DELETE => {
                record.config.remove(name);
            }
            APPEND | SUBTRACT => {
                if def.config_type != ConfigType::List {
                    return Err(invalid(format!("{name} is not a list; use SET or DELETE")));
                }
                let v = value.clone().unwrap_or_default();
                let mut items: Vec<String> = topic_config_value(&record.config, name)
                    .unwrap_or_default()
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect();
                if *op == APPEND {
                    if !items.contains(&v) {
                        items.push(v);
                    }
                } else {
                    items.retain(|i| *i != v);
                }
                let joined = items.join(",");
                validate_topic_config(name, &joined).map_err(invalid)?;
                record.config.insert(name.clone(), joined);
            }
            other => return Err(invalid(format!("unknown operation {other} for {name}"))),
        }
    }
    // The rules between configs (compaction lags) hold for the result.
    validate_topic_configs(&record.config).map_err(invalid)
}

pub async fn handle(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    req: IncrementalAlterConfigsRequest,
) -> IncrementalAlterConfigsResponse {
    let mut responses = Vec::with_capacity(req.resources.len());
    for r in req.resources {
        let name = r.resource_name.to_string();
        let changes: Vec<Change> = r
            .configs
            .iter()
            .map(|c| {
                (
                    c.name.to_string(),
                    c.config_operation,
                    c.value.as_ref().map(|v| v.to_string()),
                )
            })
            .collect();
        let denied =
            super::config_denied(broker, ctx, Operation::AlterConfigs, r.resource_type, &name);
        let outcome = match (r.resource_type, denied) {
            (_, Some(refusal)) => Err(refusal),
            (RESOURCE_TOPIC, None) => broker
                .topics
                .modify(&name, req.validate_only, |record| apply(record, &changes))
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
    IncrementalAlterConfigsResponse::default().with_responses(responses)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> TopicRecord {
        TopicRecord {
            name: "t".into(),
            id: uuid::Uuid::nil(),
            partitions: 1,
            replication_factor: 1,
            config: Default::default(),
            created_ms: 0,
            deleting: false,
            deletion: None,
        }
    }

    #[test]
    fn set_delete_append_subtract() {
        let mut r = record();
        apply(&mut r, &[("retention.ms".into(), SET, Some("1000".into()))]).unwrap();
        assert_eq!(r.config["retention.ms"], "1000");
        apply(&mut r, &[("retention.ms".into(), DELETE, None)]).unwrap();
        assert!(r.config.is_empty());
        apply(
            &mut r,
            &[("cleanup.policy".into(), APPEND, Some("compact".into()))],
        )
        .unwrap();
        assert_eq!(r.config["cleanup.policy"], "delete,compact");
        apply(
            &mut r,
            &[("cleanup.policy".into(), SUBTRACT, Some("delete".into()))],
        )
        .unwrap();
        assert_eq!(r.config["cleanup.policy"], "compact");
        let err = apply(
            &mut r,
            &[("cleanup.policy".into(), SUBTRACT, Some("compact".into()))],
        )
        .unwrap_err();
        assert!(err.message.contains("cleanup.policy="), "{}", err.message);
        let err = apply(
            &mut r,
            &[
                ("max.compaction.lag.ms".into(), SET, Some("10".into())),
                ("min.compaction.lag.ms".into(), SET, Some("20".into())),
            ],
        )
        .unwrap_err();
        assert!(
            err.message.contains("min.compaction.lag.ms"),
            "{}",
            err.message
        );
        r.config.clear();
        assert!(apply(&mut r, &[("retention.ms".into(), APPEND, Some("1".into()))]).is_err());
        assert!(apply(&mut r, &[("no.such".into(), SET, Some("1".into()))])
            .unwrap_err()
            .message
            .contains("unknown"));
    }
}
