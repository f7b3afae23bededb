//! Which committed offsets have outlived `offsets.retention.minutes`, by
//! Kafka's rules (KIP-211): a pure function of the group, its offsets and the
//! clock.
//!
//! - A group with a protocol that is Empty: all its offsets, once the
//!   retention has passed since it became empty (since each offset's commit
//!   when that time is unknown).
//! - A stable consumer group whose subscriptions are known: offsets of topics
//!   no member subscribes to, by their commit times.
//! - A group used only for offsets (no protocol): each offset by its commit
//!   time.
//! - Any other group (rebalancing, or members of another protocol): none.

use std::collections::BTreeMap;

use kafscale_metadata::CommittedOffset;

use super::group::{Group, GroupState};

pub fn expired_offsets(
    group: &Group,
    offsets: &BTreeMap<(String, i32), CommittedOffset>,
    now_ms: i64,
    retention_ms: i64,
) -> Vec<(String, i32)> {
    let outlived = |base_ms: i64| now_ms.saturating_sub(base_ms) >= retention_ms;
    let by_commit = |keep_topic: &dyn Fn(&str) -> bool| {
        offsets
            .iter()
            .filter(|((topic, _), o)| !keep_topic(topic) && outlived(o.commit_ms))
            .map(|(k, _)| k.clone())
            .collect()
    };
    match (&group.protocol_type, group.state) {
        (None, _) => by_commit(&|_| false),
        (Some(_), GroupState::Empty) => match group.emptied_at_ms {
            Some(emptied) if outlived(emptied) => offsets.keys().cloned().collect(),
            Some(_) => Vec::new(),
            None => by_commit(&|_| false),
        },
        (Some(_), GroupState::Stable) => match group.subscribed_topics() {
            Some(subscribed) => by_commit(&|topic| subscribed.contains(topic)),
            None => Vec::new(),
        },
        (Some(_), _) => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafscale_metadata::{GroupRecord, MemberRecord};
    use std::time::Instant;

    const DAY: i64 = 86_400_000;
    const WEEK: i64 = 7 * DAY;

    fn offsets(entries: &[(&str, i64)]) -> BTreeMap<(String, i32), CommittedOffset> {
        entries
            .iter()
            .map(|(topic, commit_ms)| {
                (
                    (topic.to_string(), 0),
                    CommittedOffset {
                        offset: 1,
                        leader_epoch: -1,
                        metadata: None,
                        commit_ms: *commit_ms,
                    },
                )
            })
            .collect()
    }

    /// A consumer-protocol subscription (version 1) to `topics`.
    fn subscription(topics: &[&str]) -> Vec<u8> {
        use kafka_protocol::messages::ConsumerProtocolSubscription;
        use kafka_protocol::protocol::{Encodable, StrBytes};
        let mut buf = bytes::BytesMut::new();
        buf.extend_from_slice(&1i16.to_be_bytes());
        ConsumerProtocolSubscription::default()
            .with_topics(
                topics
                    .iter()
                    .map(|t| StrBytes::from_string(t.to_string()))
                    .collect(),
            )
            .encode(&mut buf, 1)
            .unwrap();
        buf.to_vec()
    }

    fn group(
        protocol_type: Option<&str>,
        members: &[Vec<u8>],
        emptied_at_ms: Option<i64>,
    ) -> Group {
        let record = GroupRecord {
            generation: 1,
            protocol_type: protocol_type.map(str::to_string),
            protocol: (!members.is_empty()).then(|| "range".to_string()),
            leader: None,
            members: members
                .iter()
                .enumerate()
                .map(|(i, metadata)| MemberRecord {
                    member_id: format!("m{i}"),
                    group_instance_id: None,
                    client_id: "c".into(),
                    client_host: "/127.0.0.1".into(),
                    session_timeout_ms: 10_000,
                    rebalance_timeout_ms: 10_000,
                    protocols: vec![("range".into(), metadata.clone())],
                    assignment: Vec::new(),
                })
                .collect(),
            emptied_at_ms,
        };
        Group::restore("g", &record, Instant::now())
    }

    #[test]
    fn offsets_only_groups_expire_each_offset_by_its_commit_time() {
        let g = group(None, &[], None);
        let stored = offsets(&[("old", 0), ("recent", 2 * DAY)]);
        assert_eq!(
            expired_offsets(&g, &stored, WEEK + DAY, WEEK),
            vec![("old".to_string(), 0)]
        );
        assert!(expired_offsets(&g, &stored, WEEK - 1, WEEK).is_empty());
    }

    #[test]
    fn an_empty_consumer_group_keeps_all_its_offsets_until_the_retention_after_it_emptied() {
        // Committed long ago, but the group emptied only a day ago.
        let g = group(Some("consumer"), &[], Some(10 * DAY));
        let stored = offsets(&[("a", 0), ("b", DAY)]);
        assert!(expired_offsets(&g, &stored, 11 * DAY, WEEK).is_empty());
        assert_eq!(expired_offsets(&g, &stored, 17 * DAY, WEEK).len(), 2);
        // A record from before the emptied time was kept: by commit times.
        let old = group(Some("consumer"), &[], None);
        assert_eq!(
            expired_offsets(&old, &stored, WEEK + DAY / 2, WEEK),
            vec![("a".to_string(), 0)]
        );
    }

    #[test]
    fn a_stable_consumer_group_loses_only_offsets_of_topics_nobody_subscribes_to() {
        let g = group(
            Some("consumer"),
            &[
                subscription(&["orders"]),
                subscription(&["orders", "payments"]),
            ],
            None,
        );
        let stored = offsets(&[
            ("orders", 0),
            ("payments", 0),
            ("dropped", 0),
            ("fresh", WEEK),
        ]);
        assert_eq!(
            expired_offsets(&g, &stored, WEEK + 1, WEEK),
            vec![("dropped".to_string(), 0)]
        );
    }

    #[test]
    fn groups_of_other_protocols_or_unreadable_subscriptions_keep_their_offsets() {
        let stored = offsets(&[("t", 0)]);
        let connect = group(Some("connect"), &[b"anything".to_vec()], None);
        assert!(expired_offsets(&connect, &stored, 10 * WEEK, WEEK).is_empty());
        let garbled = group(Some("consumer"), &[vec![0, 1, 0xff]], None);
        assert!(expired_offsets(&garbled, &stored, 10 * WEEK, WEEK).is_empty());
    }
}
