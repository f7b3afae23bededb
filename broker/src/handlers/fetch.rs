//! Fetch v4–v16: durable data only, long-polling on high-watermark changes.
//!
//! Fetch sessions (KIP-227) are answered with session id 0, which every client
//! treats as "no session": it keeps sending full fetch requests.
//!
//! A partition named more than once is read and answered once, as Kafka keys
//! a fetch by partition. The response is capped by what the connection
//! reserved for it (at most `--fetch-max-bytes`), whatever the client asks.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::future::select_all;
use futures::FutureExt;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::{ApiKey, FetchRequest, FetchResponse, ResponseKind, TopicName};
use uuid::Uuid;

use kafscale_storage_format::batch;

use super::kafka_error::KafkaError;
use super::{Deferred, RequestContext};
use crate::listener_limits::{ResponseHold, FETCH_MIN_GRANT_BYTES};
use crate::metrics::TopicLabels;
use crate::partition_log::PartitionLog;
use crate::partition_service::{PartitionService, TopicRef};
use crate::Broker;

struct Target {
    topic_index: usize,
    partition: i32,
    offset: i64,
    max_bytes: usize,
    log: Result<Arc<PartitionLog>, ResponseError>,
}

struct TopicSlot {
    name: TopicName,
    id: Uuid,
}

/// The longest a fetch long-polls, whatever `max_wait_ms` asks: the client
/// just asks again.
const MAX_FETCH_WAIT: Duration = Duration::from_secs(30);

pub fn handle(
    broker: Arc<Broker>,
    ctx: &RequestContext,
    req: FetchRequest,
    version: i16,
) -> Deferred {
    let ctx = ctx.clone();
    async move {
        Some(ResponseKind::Fetch(
            fetch(&broker, &ctx, req, version, &ctx.hold).await,
        ))
    }
    .boxed()
}

async fn fetch(
    broker: &Broker,
    ctx: &RequestContext,
    req: FetchRequest,
    version: i16,
    hold: &ResponseHold,
) -> FetchResponse {
    let mut slots = Vec::with_capacity(req.topics.len());
    let mut slot_of: HashMap<(TopicName, Uuid), usize> = HashMap::new();
    let mut seen: HashSet<(usize, i32)> = HashSet::new();
    let mut targets = Vec::new();
    let service = broker.partitions();
    for t in &req.topics {
        let topic = service.topic(
            ctx,
            ApiKey::Fetch,
            match version >= 13 {
                true => TopicRef::Id(t.topic_id),
                false => TopicRef::Name(t.topic.0.as_str()),
            },
        );
        let topic_index = *slot_of
            .entry((t.topic.clone(), t.topic_id))
            .or_insert_with(|| {
                slots.push(TopicSlot {
                    name: t.topic.clone(),
                    id: t.topic_id,
                });
                slots.len() - 1
            });
        for p in &t.partitions {
            if !seen.insert((topic_index, p.partition)) {
                continue;
            }
            let log = topic
                .clone()
                .and_then(|topic| PartitionService::log(&topic, p.partition))
                .and_then(|log| {
                    service.lead(&log, p.current_leader_epoch)?;
                    Ok(log)
                })
                .map_err(|e| KafkaError::from(e).error);
            targets.push(Target {
                topic_index,
                partition: p.partition,
                offset: p.fetch_offset,
                max_bytes: p.partition_max_bytes.max(0) as usize,
                log,
            });
        }
    }

    let max_wait = Duration::from_millis(req.max_wait_ms.max(0) as u64).min(MAX_FETCH_WAIT);
    let deadline = tokio::time::Instant::now() + max_wait;
    let min_bytes = req.min_bytes.max(0) as usize;
    let cap = broker.config.listener.fetch_max_bytes;
    let wanted = match usize::try_from(req.max_bytes) {
        Ok(n) if n > 0 => n.min(cap),
        _ => cap,
    };

    let mut read_so_far = None;
    let partitions = loop {
        // Subscribe before reading so a write that lands in between still wakes us.
        let mut watchers: Vec<_> = targets
            .iter()
            .filter_map(|t| t.log.as_ref().ok().map(|l| l.watch_high_watermark()))
            .collect();
        // Memory for the response is reserved for each read, and kept until
        // the response is written; a long poll with nothing read holds none.
        drop(read_so_far.take());
        let reservation = broker
            .fetch_memory
            .reserve_up_to(wanted, FETCH_MIN_GRANT_BYTES)
            .await;
        let (partitions, total, any_error) = read_all(&targets, reservation.bytes).await;
        if total >= min_bytes.max(1)
            || any_error
            || watchers.is_empty()
            || tokio::time::Instant::now() >= deadline
        {
            let mut kept = reservation;
            kept.shrink_to(total);
            hold.keep(kept);
            break partitions;
        }
        // What was read stays reserved across the wait; the rest goes back
        // now, so an empty long poll holds nothing.
        if total > 0 {
            let mut kept = reservation;
            kept.shrink_to(total);
            read_so_far = Some(kept);
        } else {
            drop(reservation);
        }
        let changed = select_all(watchers.iter_mut().map(|w| Box::pin(w.changed())));
        if tokio::time::timeout_at(deadline, changed).await.is_err() {
            // Deadline passed without news: answer with what we have (usually nothing).
            if let Some(r) = read_so_far.take() {
                hold.keep(r);
            }
            break partitions;
        }
    };

    let mut responses: Vec<FetchableTopicResponse> = slots
        .into_iter()
        .map(|s| {
            let r = FetchableTopicResponse::default();
            if version >= 13 {
                r.with_topic_id(s.id)
            } else {
                r.with_topic(s.name)
            }
        })
        .collect();
    for (target, data) in targets.iter().zip(partitions) {
        if let (Some(records), Ok(log)) = (&data.records, &target.log) {
            if !records.is_empty() {
                let labels = TopicLabels {
                    topic: log.topic.clone(),
                };
                let count: u64 = batch::iter_headers(records)
                    .map(|(_, h)| h.records_count.max(0) as u64)
                    .sum();
                broker
                    .metrics
                    .fetch_records
                    .get_or_create(&labels)
                    .inc_by(count);
                broker
                    .metrics
                    .fetch_bytes
                    .get_or_create(&labels)
                    .inc_by(records.len() as u64);
            }
        }
        responses[target.topic_index].partitions.push(data);
    }
    FetchResponse::default()
        .with_session_id(0)
        .with_responses(responses)
}

enum PartitionRead {
    Unknown(ResponseError),
    Data(crate::partition_log::ReadResult),
    Failed {
        code: i16,
        log_start: i64,
        high_watermark: i64,
    },
}

/// One partition's read of at most `budget` bytes (at least one batch unless
/// `budget` is 0 and earlier partitions already filled the response).
async fn read_one(t: &Target, budget: usize, have_data: bool) -> PartitionRead {
    let log = match &t.log {
        Err(code) => return PartitionRead::Unknown(*code),
        Ok(log) => log,
    };
    let result = if budget == 0 && have_data {
        log.offsets()
            .await
            .map(|(log_start, hw)| crate::partition_log::ReadResult {
                records: bytes::Bytes::new(),
                high_watermark: hw,
                log_start,
            })
    } else {
        log.read(t.offset, budget.max(1)).await
    };
    match result {
        Ok(r) => PartitionRead::Data(r),
        Err(e) => {
            let code = KafkaError::from(&e).code();
            let (log_start, high_watermark) = log.offsets().await.unwrap_or((-1, -1));
            PartitionRead::Failed {
                code,
                log_start,
                high_watermark,
            }
        }
    }
}

/// Partitions read concurrently: cold reads wait on object storage, so one
/// fetch of many partitions should not wait for them one after another.
const READ_WAVE: usize = 16;

/// Reads every target once. Only the first partition with data may exceed the
/// request's `max_bytes` (by returning one whole batch), as in Kafka. Targets
/// are read in waves of partitions whose whole budgets fit in what is left of
/// `max_bytes`, so reading concurrently never reads more than could be sent.
async fn read_all(targets: &[Target], max_bytes: usize) -> (Vec<PartitionData>, usize, bool) {
    let mut out = Vec::with_capacity(targets.len());
    let mut total = 0usize;
    let mut any_error = false;
    let mut next = 0;
    while next < targets.len() {
        let remaining = max_bytes.saturating_sub(total);
        let mut end = next + 1;
        let mut planned = targets[next].max_bytes.min(remaining);
        while end < targets.len()
            && end - next < READ_WAVE
            && planned + targets[end].max_bytes <= remaining
        {
            planned += targets[end].max_bytes;
            end += 1;
        }
        let wave = &targets[next..end];
        let results = futures::future::join_all(
            wave.iter()
                .map(|t| read_one(t, remaining.min(t.max_bytes), total > 0)),
        )
        .await;
        for (t, result) in wave.iter().zip(results) {
            let mut data = PartitionData::default()
                .with_partition_index(t.partition)
                .with_aborted_transactions(None);
            match result {
                PartitionRead::Unknown(code) => {
                    data = data.with_error_code(code.code()).with_high_watermark(-1);
                    any_error = true;
                }
                PartitionRead::Data(r) => {
                    let budget = max_bytes.saturating_sub(total).min(t.max_bytes);
                    let records = if total > 0 && r.records.len() > budget {
                        bytes::Bytes::new()
                    } else {
                        r.records
                    };
                    total += records.len();
                    data = data
                        .with_high_watermark(r.high_watermark)
                        .with_last_stable_offset(r.high_watermark)
                        .with_log_start_offset(r.log_start)
                        .with_records(Some(records));
                }
                PartitionRead::Failed {
                    code,
                    log_start,
                    high_watermark,
                } => {
                    any_error = true;
                    data = data
                        .with_error_code(code)
                        .with_high_watermark(high_watermark)
                        .with_last_stable_offset(high_watermark)
                        .with_log_start_offset(log_start);
                }
            }
            out.push(data);
        }
        next = end;
    }
    (out, total, any_error)
}
