//! DescribeConfigs v1–v4 for topics (every supported config with its value,
//! default, source and synonyms) and for this broker (its static settings).

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym,
};
use kafka_protocol::messages::{DescribeConfigsRequest, DescribeConfigsResponse};

use super::kafka_error::KafkaError;
use super::{str_bytes, RequestContext};
use crate::security::acl::Operation;
use crate::Broker;
use kafscale_metadata::topic_rules::{ConfigType, TOPIC_CONFIGS};

pub const RESOURCE_TOPIC: i8 = 2;
pub const RESOURCE_BROKER: i8 = 4;
const SOURCE_TOPIC: i8 = 1;
const SOURCE_STATIC_BROKER: i8 = 4;
const SOURCE_DEFAULT: i8 = 5;

struct Entry {
    name: String,
    value: String,
    source: i8,
    read_only: bool,
    config_type: ConfigType,
    doc: &'static str,
    default: Option<String>,
}

pub async fn handle(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    req: DescribeConfigsRequest,
    version: i16,
) -> DescribeConfigsResponse {
    let mut results = Vec::with_capacity(req.resources.len());
    for r in req.resources {
        let base = DescribeConfigsResult::default()
            .with_resource_type(r.resource_type)
            .with_resource_name(r.resource_name.clone());
        let denied = super::config_denied(
            broker,
            ctx,
            Operation::DescribeConfigs,
            r.resource_type,
            r.resource_name.as_str(),
        );
        let entries = match (r.resource_type, denied) {
            (_, Some(refusal)) => Err(refusal),
            (RESOURCE_TOPIC, None) => match broker.topics.get(r.resource_name.as_str()) {
                Some(topic) => Ok(topic_entries(&topic.record.config)),
                None => Err(KafkaError::new(
                    ResponseError::UnknownTopicOrPartition,
                    format!("topic '{}' does not exist", r.resource_name.as_str()),
                )),
            },
            (RESOURCE_BROKER, None) => {
                let name = r.resource_name.as_str();
                if name.is_empty() || name == broker.config.node_id.to_string() {
                    Ok(broker_entries(broker))
                } else {
                    Err(KafkaError::new(
                        ResponseError::InvalidRequest,
                        format!(
                            "broker '{name}' is not this broker (id {})",
                            broker.config.node_id
                        ),
                    ))
                }
            }
            (other, None) => Err(KafkaError::new(
                ResponseError::InvalidRequest,
                format!("resource type {other} is not supported; use topics (2) or brokers (4)"),
            )),
        };
        let result = match entries {
            Err(KafkaError {
                error,
                message: msg,
            }) => base
                .with_error_code(error.code())
                .with_error_message(Some(str_bytes(msg))),
            Ok(entries) => {
                // Null (and, defensively, an empty list) means every config.
                let wanted = r.configuration_keys.as_ref().filter(|k| !k.is_empty());
                let configs = entries
                    .into_iter()
                    .filter(|e| wanted.is_none_or(|keys| keys.iter().any(|k| k.as_str() == e.name)))
                    .map(|e| describe(e, version, req.include_synonyms, req.include_documentation))
                    .collect();
                base.with_configs(configs)
            }
        };
        results.push(result);
    }
    DescribeConfigsResponse::default().with_results(results)
}

fn describe(
    e: Entry,
    version: i16,
    synonyms: bool,
    documentation: bool,
) -> DescribeConfigsResourceResult {
    let mut out = DescribeConfigsResourceResult::default()
        .with_name(str_bytes(e.name.clone()))
        .with_value(Some(str_bytes(e.value.clone())))
        .with_read_only(e.read_only)
        .with_config_source(e.source);
    if synonyms {
        let mut list = vec![DescribeConfigsSynonym::default()
            .with_name(str_bytes(e.name.clone()))
            .with_value(Some(str_bytes(e.value.clone())))
            .with_source(e.source)];
        if let Some(default) = e.default.filter(|_| e.source != SOURCE_DEFAULT) {
            list.push(
                DescribeConfigsSynonym::default()
                    .with_name(str_bytes(e.name.clone()))
                    .with_value(Some(str_bytes(default)))
                    .with_source(SOURCE_DEFAULT),
            );
        }
        out = out.with_synonyms(list);
    }
    if version >= 3 {
        out = out.with_config_type(e.config_type as i8);
        if documentation {
            out = out.with_documentation(Some(str_bytes(e.doc)));
        }
    }
    out
}

fn topic_entries(set: &std::collections::BTreeMap<String, String>) -> Vec<Entry> {
    TOPIC_CONFIGS
        .iter()
        .map(|d| {
            let (value, source) = match set.get(d.name) {
                Some(v) => (v.clone(), SOURCE_TOPIC),
                None => (d.default.to_string(), SOURCE_DEFAULT),
            };
            Entry {
                name: d.name.to_string(),
                value,
                source,
                read_only: false,
                config_type: d.config_type,
                doc: d.doc,
                default: Some(d.default.to_string()),
            }
        })
        .collect()
}

fn broker_entries(broker: &Broker) -> Vec<Entry> {
    let c = &broker.config;
    let fixed = |name: &str, value: String, config_type, doc| Entry {
        name: name.to_string(),
        value,
        source: SOURCE_STATIC_BROKER,
        read_only: true,
        config_type,
        doc,
        default: None,
    };
    vec![
        fixed(
            "broker.id",
            c.node_id.to_string(),
            ConfigType::Int,
            "This broker's id (--node-id).",
        ),
        fixed(
            "auto.create.topics.enable",
            c.auto_create_topics.to_string(),
            ConfigType::Boolean,
            "Whether unknown topics are created on request (--auto-create-topics).",
        ),
        fixed(
            "num.partitions",
            c.default_partitions.to_string(),
            ConfigType::Int,
            "Partitions of topics created without a count (--default-partitions).",
        ),
        fixed(
            "socket.request.max.bytes",
            c.max_request_bytes.to_string(),
            ConfigType::Int,
            "Largest request accepted (--max-request-bytes).",
        ),
        fixed(
            "kafscale.flush.window.ms",
            c.log.flush_window.as_millis().to_string(),
            ConfigType::Long,
            "Group-commit window before an upload to object storage (--flush-window-ms).",
        ),
        fixed(
            "kafscale.memory.budget.bytes",
            c.log.memory_budget.to_string(),
            ConfigType::Long,
            "Recent data kept in memory for reads (--memory-budget-bytes).",
        ),
    ]
}
