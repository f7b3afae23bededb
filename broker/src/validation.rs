//! Validation of topic names and topic configs, with messages that say what to do.

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

/// Topic configs Kafscale understands, with their defaults.
pub const TOPIC_CONFIG_DEFAULTS: &[(&str, &str)] = &[
    ("cleanup.policy", "delete"),
    ("max.message.bytes", "1048588"),
    ("message.timestamp.type", "CreateTime"),
    ("retention.bytes", "-1"),
    ("retention.ms", "604800000"),
    ("segment.bytes", "1073741824"),
];

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
            TOPIC_CONFIG_DEFAULTS
                .iter()
                .map(|(k, _)| *k)
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
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
}
