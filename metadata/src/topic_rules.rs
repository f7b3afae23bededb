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
    Double = 6,
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
        doc: "'delete' removes old data by retention.ms and retention.bytes; 'compact' keeps at least the latest record of every key; 'compact,delete' does both.",
    },
    TopicConfigDef {
        name: "delete.retention.ms",
        default: "86400000",
        config_type: ConfigType::Long,
        doc: "Compacted topics: how long a tombstone (a record with a null value) stays readable after the cleaner first reached it.",
    },
    TopicConfigDef {
        name: "max.compaction.lag.ms",
        default: "9223372036854775807",
        config_type: ConfigType::Long,
        doc: "Compacted topics: the longest a record stays uncompacted; data older than this is cleaned whatever the dirty ratio.",
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
        name: "min.cleanable.dirty.ratio",
        default: "0.5",
        config_type: ConfigType::Double,
        doc: "Compacted topics: the share of a partition not yet cleaned at which the cleaner takes it up.",
    },
    TopicConfigDef {
        name: "min.compaction.lag.ms",
        default: "0",
        config_type: ConfigType::Long,
        doc: "Compacted topics: the least time a record stays uncompacted after it was written.",
    },
    TopicConfigDef {
        name: "retention.bytes",
        default: "-1",
        config_type: ConfigType::Long,
        doc: "Per partition: oldest segments are deleted while the partition holds more than this (-1: no limit). Applies with cleanup.policy delete.",
    },
    TopicConfigDef {
        name: "retention.ms",
        default: "604800000",
        config_type: ConfigType::Long,
        doc: "Segments older than this are deleted (-1: keep forever). Applies with cleanup.policy delete.",
    },
    TopicConfigDef {
        name: "segment.bytes",
        default: "1073741824",
        config_type: ConfigType::Int,
        doc: "Target size of segments in object storage.",
    },
    TopicConfigDef {
        name: "segment.ms",
        default: "604800000",
        config_type: ConfigType::Long,
        doc: "Compacted topics: data becomes cleanable once it is this old even if its segment is not full.",
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
        "cleanup.policy" => CleanupPolicy::parse(value).map(|_| ()),
        "min.cleanable.dirty.ratio" => match value.trim().parse::<f64>() {
            Ok(v) if (0.0..=1.0).contains(&v) => Ok(()),
            _ => Err(format!(
                "{key}={value} is invalid: expected a number from 0 to 1"
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
        "delete.retention.ms" | "min.compaction.lag.ms" => int(0),
        "max.compaction.lag.ms" | "segment.ms" => int(1),
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

/// `cleanup.policy`: a list of `delete` and `compact`, as Kafka takes it
/// (items trimmed, in any order, each at most once).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CleanupPolicy {
    /// Retention (`retention.ms`, `retention.bytes`) removes old data.
    pub delete: bool,
    /// The cleaner keeps at least the latest record of every key; produces
    /// of records without a key are refused.
    pub compact: bool,
}

impl CleanupPolicy {
    pub fn parse(value: &str) -> Result<Self, String> {
        let mut policy = Self {
            delete: false,
            compact: false,
        };
        for item in value.split(',').map(str::trim) {
            let seen = match item {
                "delete" => std::mem::replace(&mut policy.delete, true),
                "compact" => std::mem::replace(&mut policy.compact, true),
                _ => {
                    return Err(format!(
                        "cleanup.policy={value} is invalid: '{item}' is not a policy; use delete, compact or compact,delete"
                    ))
                }
            };
            if seen {
                return Err(format!(
                    "cleanup.policy={value} is invalid: '{item}' is listed twice"
                ));
            }
        }
        Ok(policy)
    }
}

/// A topic's configs, parsed once when the topic is loaded or altered: what
/// the broker's paths read instead of strings. A value that does not parse
/// (it was validated when stored, so only a hand-edited record has one)
/// falls back to the default, as an absent one does.
#[derive(Debug, Clone, PartialEq)]
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
    /// `cleanup.policy`.
    pub cleanup: CleanupPolicy,
    /// `delete.retention.ms`: how long a cleaned tombstone stays readable.
    pub delete_retention_ms: i64,
    /// `min.compaction.lag.ms`.
    pub min_compaction_lag_ms: i64,
    /// `max.compaction.lag.ms`.
    pub max_compaction_lag_ms: i64,
    /// `min.cleanable.dirty.ratio`.
    pub min_cleanable_dirty_ratio: f64,
    /// `segment.ms`: how old data must be to count as sealed for cleaning.
    pub segment_ms: i64,
}

impl Default for TopicConfig {
    fn default() -> Self {
        Self::parse(&BTreeMap::new())
    }
}

impl TopicConfig {
    /// `retention.ms` as retention applies it: only with cleanup.policy
    /// delete (a compacted topic keeps every key's latest value however old).
    pub fn applied_retention_ms(&self) -> Option<i64> {
        self.retention_ms.filter(|_| self.cleanup.delete)
    }

    /// `retention.bytes` as retention applies it (see `applied_retention_ms`).
    pub fn applied_retention_bytes(&self) -> Option<i64> {
        self.retention_bytes.filter(|_| self.cleanup.delete)
    }

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
            cleanup: topic_config_value(configs, "cleanup.policy")
                .and_then(|v| CleanupPolicy::parse(v).ok())
                .unwrap_or(CleanupPolicy {
                    delete: true,
                    compact: false,
                }),
            delete_retention_ms: value(configs, "delete.retention.ms"),
            min_compaction_lag_ms: value(configs, "min.compaction.lag.ms"),
            max_compaction_lag_ms: value(configs, "max.compaction.lag.ms"),
            min_cleanable_dirty_ratio: value(configs, "min.cleanable.dirty.ratio"),
            segment_ms: value(configs, "segment.ms"),
        }
    }
}

/// Every config `TopicConfig` reads has a default that parses; the tests
/// below check it, so this is never reached.
fn unreachable_default<T>(name: &str) -> T {
    panic!("topic config {name} has no parseable default")
}

/// Checks every entry, then the rules between them (as Kafka does).
pub fn validate_topic_configs(configs: &BTreeMap<String, String>) -> Result<(), String> {
    configs
        .iter()
        .try_for_each(|(k, v)| validate_topic_config(k, v))?;
    let parsed = TopicConfig::parse(configs);
    if parsed.min_compaction_lag_ms > parsed.max_compaction_lag_ms {
        return Err(format!(
            "min.compaction.lag.ms={} is larger than max.compaction.lag.ms={}; lower the first or raise the second",
            parsed.min_compaction_lag_ms, parsed.max_compaction_lag_ms
        ));
    }
    Ok(())
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
        for policy in ["delete", "compact", "compact,delete", "delete, compact"] {
            assert!(
                validate_topic_config("cleanup.policy", policy).is_ok(),
                "{policy}"
            );
        }
        for policy in ["", "compacted", "delete,delete"] {
            let err = validate_topic_config("cleanup.policy", policy).unwrap_err();
            assert!(err.contains("cleanup.policy="), "{err}");
        }
        assert!(validate_topic_config("min.cleanable.dirty.ratio", "0.1").is_ok());
        assert!(validate_topic_config("min.cleanable.dirty.ratio", "1.5").is_err());
        assert!(validate_topic_config("delete.retention.ms", "-1").is_err());
        let lags: BTreeMap<String, String> = [
            ("min.compaction.lag.ms", "2000"),
            ("max.compaction.lag.ms", "1000"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert!(validate_topic_configs(&lags)
            .unwrap_err()
            .contains("larger than max.compaction.lag.ms"));
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
        assert_eq!(
            defaults.cleanup,
            CleanupPolicy {
                delete: true,
                compact: false
            }
        );
        assert_eq!(defaults.delete_retention_ms, 86_400_000);
        assert_eq!(defaults.max_compaction_lag_ms, i64::MAX);
        assert_eq!(defaults.min_cleanable_dirty_ratio, 0.5);
        let set: BTreeMap<String, String> = [
            ("retention.ms", "-1"),
            ("retention.bytes", "1000"),
            ("message.timestamp.type", "LogAppendTime"),
            ("max.message.bytes", "not a number"),
            ("cleanup.policy", "compact"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let parsed = TopicConfig::parse(&set);
        assert_eq!(parsed.retention_ms, None);
        assert_eq!(parsed.retention_bytes, Some(1000));
        assert!(parsed.log_append_time);
        assert_eq!(parsed.max_message_bytes, 1_048_588);
        assert!(parsed.cleanup.compact && !parsed.cleanup.delete);
        assert_eq!(parsed.retention_bytes, Some(1000));
        assert_eq!(parsed.applied_retention_bytes(), None);
    }
}
