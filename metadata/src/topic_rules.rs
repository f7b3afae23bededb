//! The rules for topic names and topic configs, shared by everything that
//! creates or changes topics (broker and operator). Messages say what to do.

use std::collections::BTreeMap;

/// Kafka's rule: 1–249 characters of `[a-zA-Z0-9._-]`, not `.` or `..`.
pub fn validate_topic_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("topic name is empty".into());
    }
    if name == "." || name == ".." {
        return Err(format!("topic name '{name}' is not allowed"));
    }
    if name.len() > 249 {
        return Err(format!(
            "topic name is {} characters long; the maximum is 249",
            name.len()
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "topic name '{name}' contains '{c}'; use only ASCII letters, digits, '.', '_' and '-'"
        ));
    }
    Ok(())
}

/// Kafka's config value types, as DescribeConfigs reports them (v3+).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i8)]
pub enum ConfigType {
    Boolean = 1,
    String = 2,
    Int = 3,
    Long = 5,
    List = 7,
}

/// One topic config Kafscale understands.
#[derive(Debug, Clone, Copy)]
pub struct TopicConfigDef {
    pub name: &'static str,
    pub default: &'static str,
    pub config_type: ConfigType,
    pub doc: &'static str,
}

/// Every topic config Kafscale understands; all of them can be altered.
pub const TOPIC_CONFIGS: &[TopicConfigDef] = &[
    TopicConfigDef {
        name: "cleanup.policy",
        default: "delete",
        config_type: ConfigType::List,
        doc: "Only 'delete': old segments are removed by retention. Compaction is not supported.",
    },
    TopicConfigDef {
        name: "max.message.bytes",
        default: "1048588",
        config_type: ConfigType::Int,
        doc: "Largest record batch accepted; larger ones get MESSAGE_TOO_LARGE.",
    },
    TopicConfigDef {
        name: "message.timestamp.type",
        default: "CreateTime",
        config_type: ConfigType::String,
        doc: "CreateTime keeps the producer's timestamps; LogAppendTime stamps batches with the broker's time.",
    },
    TopicConfigDef {
        name: "retention.bytes",
        default: "-1",
        config_type: ConfigType::Long,
        doc: "Per partition: oldest segments are deleted while the partition holds more than this (-1: no limit).",
    },
    TopicConfigDef {
        name: "retention.ms",
        default: "604800000",
        config_type: ConfigType::Long,
        doc: "Segments older than this are deleted (-1: keep forever).",
    },
    TopicConfigDef {
        name: "segment.bytes",
        default: "1073741824",
        config_type: ConfigType::Int,
        doc: "Target size of segments in object storage.",
    },
];

pub fn topic_config_def(name: &str) -> Option<&'static TopicConfigDef> {
    TOPIC_CONFIGS.iter().find(|d| d.name == name)
}

/// A topic's effective value for a config: its own or the default.
pub fn topic_config_value<'a>(
    configs: &'a BTreeMap<String, String>,
    name: &str,
) -> Option<&'a str> {
    configs
        .get(name)
        .map(String::as_str)
        .or_else(|| topic_config_def(name).map(|d| d.default))
}

/// Checks one topic config entry; the error names the key and the valid values.
pub fn validate_topic_config(key: &str, value: &str) -> Result<(), String> {
    let int = |min: i64| -> Result<(), String> {
        match value.parse::<i64>() {
            Ok(v) if v >= min => Ok(()),
            _ => Err(format!(
                "{key}={value} is invalid: expected an integer >= {min}"
            )),
        }
    };
    match key {
        "cleanup.policy" => match value {
            "delete" => Ok(()),
            _ => Err(format!(
                "cleanup.policy={value} is not supported: Kafscale supports only 'delete' (no compaction)"
            )),
        },
        "message.timestamp.type" => match value {
            "CreateTime" | "LogAppendTime" => Ok(()),
            _ => Err(format!(
                "message.timestamp.type={value} is invalid: use CreateTime or LogAppendTime"
            )),
        },
        "max.message.bytes" => int(0),
        "segment.bytes" => int(14),
        "retention.ms" | "retention.bytes" => int(-1),
        _ => Err(format!(
            "unknown topic config '{key}'; supported: {}",
            TOPIC_CONFIGS
                .iter()
                .map(|d| d.name)
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

/// A topic's configs, parsed once when the topic is loaded or altered: what
/// the broker's paths read instead of strings. A value that does not parse
/// (it was validated when stored, so only a hand-edited record has one)
/// falls back to the default, as an absent one does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicConfig {
    /// The largest record batch a produce may carry (`max.message.bytes`).
    pub max_message_bytes: usize,
    /// `message.timestamp.type=LogAppendTime`: batches are stamped with the
    /// broker's clock.
    pub log_append_time: bool,
    /// `retention.ms`; `None` keeps data forever (-1).
    pub retention_ms: Option<i64>,
    /// `retention.bytes` per partition; `None` sets no limit (-1).
    pub retention_bytes: Option<i64>,
    /// `segment.bytes`: the size segments grow to in object storage.
    pub segment_bytes: u64,
}

impl Default for TopicConfig {
    fn default() -> Self {
        Self::parse(&BTreeMap::new())
    }
}

impl TopicConfig {
    pub fn parse(configs: &BTreeMap<String, String>) -> Self {
        fn value<T: std::str::FromStr>(configs: &BTreeMap<String, String>, name: &str) -> T {
            let default = || {
                topic_config_def(name)
                    .and_then(|d| d.default.parse().ok())
                    .unwrap_or_else(|| unreachable_default(name))
            };
            configs
                .get(name)
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(default)
        }
        let limit = |v: i64| (v >= 0).then_some(v);
        Self {
            max_message_bytes: value(configs, "max.message.bytes"),
            log_append_time: topic_config_value(configs, "message.timestamp.type")
                == Some("LogAppendTime"),
            retention_ms: limit(value(configs, "retention.ms")),
            retention_bytes: limit(value(configs, "retention.bytes")),
            segment_bytes: value(configs, "segment.bytes"),
        }
    }
}

/// Every config `TopicConfig` reads has a default that parses; the tests
/// below check it, so this is never reached.
fn unreachable_default<T>(name: &str) -> T {
    panic!("topic config {name} has no parseable default")
}

pub fn validate_topic_configs(configs: &BTreeMap<String, String>) -> Result<(), String> {
    configs
        .iter()
        .try_for_each(|(k, v)| validate_topic_config(k, v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names_follow_kafka_rules() {
        assert!(validate_topic_name("orders.v1_x-2").is_ok());
        assert!(validate_topic_name("").is_err());
        assert!(validate_topic_name("..").is_err());
        assert!(validate_topic_name(&"a".repeat(249)).is_ok());
        assert!(validate_topic_name(&"a".repeat(250)).is_err());
        let err = validate_topic_name("bad/name").unwrap_err();
        assert!(err.contains("'/'"), "{err}");
    }

    #[test]
    fn configs_are_checked_with_helpful_messages() {
        assert!(validate_topic_config("retention.ms", "-1").is_ok());
        assert!(validate_topic_config("retention.ms", "soon").is_err());
        assert!(validate_topic_config("cleanup.policy", "compact")
            .unwrap_err()
            .contains("only 'delete'"));
        assert!(validate_topic_config("message.timestamp.type", "LogAppendTime").is_ok());
        assert!(validate_topic_config("flush.ms", "1")
            .unwrap_err()
            .contains("supported:"));
    }

    #[test]
    fn topic_configs_parse_once_into_their_types() {
        let defaults = TopicConfig::default();
        assert_eq!(defaults.max_message_bytes, 1_048_588);
        assert!(!defaults.log_append_time);
        assert_eq!(defaults.retention_ms, Some(604_800_000));
        assert_eq!(defaults.retention_bytes, None);
        assert_eq!(defaults.segment_bytes, 1 << 30);
        let set: BTreeMap<String, String> = [
            ("retention.ms", "-1"),
            ("retention.bytes", "1000"),
            ("message.timestamp.type", "LogAppendTime"),
            ("max.message.bytes", "not a number"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let parsed = TopicConfig::parse(&set);
        assert_eq!(parsed.retention_ms, None);
        assert_eq!(parsed.retention_bytes, Some(1000));
        assert!(parsed.log_append_time);
        assert_eq!(parsed.max_message_bytes, 1_048_588);
    }
}
