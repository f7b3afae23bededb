//! What cleaning a compacted partition costs: MB/s cleaned, object-store
//! requests per GiB, and the process's peak memory against the key map's
//! budget, on a partition with many distinct keys (over a local directory
//! store, so it measures the cleaner, not a network).
//!
//!   cargo run --release -p kafscale-flusher --no-default-features \
//!     --example cleaner_cost -- [keys] [rounds] [cleaner-memory-MiB]
//!
//! Writes `rounds` updates of each of `keys` keys (lz4 batches of 1,000
//! records, 32-byte values) as segments of up to 16 MiB, then runs cleaning
//! passes until none is due, and prints one line of numbers. "Read" counts
//! what the passes read (the dirty part twice: to map keys, then to clean).

use std::sync::Arc;
use std::time::{Duration, Instant};

use kafscale_flusher::compression::Codec;
use kafscale_flusher::metrics::{FlusherMetrics, OpLabels, StoreHealth};
use kafscale_flusher::protocol::{request, Request, Response};
use kafscale_flusher::records::test_support::client_batch;
use kafscale_flusher::{FlusherService, FlusherSettings, LocalDirStore};

const BATCH: usize = 1_000;
const SEGMENT_BYTES: usize = 16 << 20;

fn peak_rss_mib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map_or(0, |kib| kib / 1024)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .map(|a| a.parse())
        .collect::<Result<_, _>>()?;
    let keys = args.first().copied().unwrap_or(2_000_000);
    let rounds = args.get(1).copied().unwrap_or(2);
    let budget_mib = args.get(2).copied().unwrap_or(128);
    let dir = tempfile::tempdir()?;
    let metrics = FlusherMetrics::detached();
    let svc = FlusherService::new(
        Arc::new(LocalDirStore::new(dir.path())?),
        FlusherSettings {
            prefix: "bench".into(),
            cleaner_memory_bytes: budget_mib << 20,
            ..FlusherSettings::default()
        },
        metrics.clone(),
        Arc::new(StoreHealth::new(Default::default())),
    );

    let mut offset = 0i64;
    let mut pending = Vec::new();
    let mut pending_bytes = 0;
    let mut written_bytes = 0u64;
    let write = |batches: Vec<bytes::Bytes>| {
        let svc = svc.clone();
        async move {
            svc.handle(Request::WriteSegment(request::WriteSegment {
                topic: "t".into(),
                partition: 0,
                not_after_ms: i64::MAX,
                batches,
            }))
            .await
        }
    };
    for round in 0..rounds {
        let mut key = 0;
        while key < keys {
            let range = key..(key + BATCH as u64).min(keys);
            let names: Vec<String> = range.clone().map(|k| format!("key-{k:012}")).collect();
            // Values that compress about as much as typical JSON does.
            let values: Vec<String> = range
                .map(|k| {
                    format!(
                        "{:032x}",
                        (k ^ (round << 40)).wrapping_mul(0x9E37_79B9_7F4A_7C15)
                    )
                })
                .collect();
            let records: Vec<_> = names
                .iter()
                .zip(&values)
                .map(|(k, v)| (0, Some(k.as_bytes()), Some(v.as_bytes())))
                .collect();
            let b = client_batch(offset, Codec::Lz4, &records);
            offset += records.len() as i64;
            key += records.len() as u64;
            pending_bytes += b.len();
            written_bytes += b.len() as u64;
            pending.push(b);
            if pending_bytes >= SEGMENT_BYTES {
                write(std::mem::take(&mut pending)).await?;
                pending_bytes = 0;
            }
        }
    }
    if !pending.is_empty() {
        write(pending).await?;
    }
    // A last small segment: the newest is never cleaned.
    let head = client_batch(offset, Codec::None, &[(0, Some(b"head"), Some(b"h"))]);
    write(vec![head]).await?;
    let requests = |op: &'static str| metrics.s3_requests.get_or_create(&OpLabels { op }).get();
    let (gets0, puts0, deletes0, lists0) = (
        requests("get"),
        requests("put"),
        requests("delete"),
        requests("list"),
    );

    // The peak from here on is the cleaning's (Linux resets it on "5").
    let written_peak = peak_rss_mib();
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let started = Instant::now();
    let (mut passes, mut read, mut rewritten, mut max_keys) = (0u64, 0u64, 0u64, 0u64);
    loop {
        let r = svc
            .handle(Request::CleanSegments(request::CleanSegments {
                topic: "t".into(),
                partition: 0,
                min_age_ms: 0,
                max_lag_ms: i64::MAX,
                min_dirty_ratio_ppm: 1,
                delete_retention_ms: 86_400_000,
                target_bytes: SEGMENT_BYTES as u64,
                not_after_ms: i64::MAX,
            }))
            .await?;
        let Response::Cleaned(c) = r else {
            anyhow::bail!("unexpected answer {r:?}")
        };
        if c.segments == 0 && c.more == 0 && c.removed == 0 {
            break;
        }
        if c.more == 0 {
            passes += 1;
            read += c.bytes_read;
            rewritten += c.bytes_written;
            max_keys = max_keys.max(c.keys);
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let took = started.elapsed().as_secs_f64();
    let gib = read as f64 / (1u64 << 30) as f64;
    println!(
        "keys {keys} x {rounds} rounds: {:.0} MiB stored; {passes} passes (at most {max_keys} keys each, budget {budget_mib} MiB) in {took:.1} s; read {:.0} MiB at {:.0} MB/s, wrote {:.0} MiB; per GiB read: {:.0} GETs, {:.0} PUTs, {:.0} DELETEs, {:.0} LISTs; peak RSS {} MiB while cleaning ({written_peak} MiB while writing)",
        written_bytes as f64 / 1048576.0,
        read as f64 / 1048576.0,
        read as f64 / 1e6 / took,
        rewritten as f64 / 1048576.0,
        (requests("get") - gets0) as f64 / gib,
        (requests("put") - puts0) as f64 / gib,
        (requests("delete") - deletes0) as f64 / gib,
        (requests("list") - lists0) as f64 / gib,
        peak_rss_mib(),
    );
    Ok(())
}
