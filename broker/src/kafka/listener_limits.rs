//! The limits of the Kafka listener: how many connections, from where, how
//! long they may sit idle or stall, and how much memory their requests and
//! responses may hold. A client that breaks them is refused or closed the way
//! Kafka does it (a closed connection, or backpressure by not reading), never
//! by the broker running out of memory.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

#[derive(Debug, Clone)]
pub struct ListenerSettings {
    /// Open connections in total (Kafka's `max.connections`).
    pub max_connections: usize,
    /// Open connections from one client address (`max.connections.per.ip`).
    pub max_connections_per_ip: usize,
    /// A connection with no request in flight and none arriving for this
    /// long is closed (`connections.max.idle.ms`).
    pub idle_timeout: Duration,
    /// A request frame that stops arriving midway, or a response the client
    /// stops reading, for this long closes the connection.
    pub stall_timeout: Duration,
    /// Bytes of requests read but not yet answered, all connections together
    /// (`queued.max.request.bytes`); when it is used up the broker stops
    /// reading requests until responses go out.
    pub queued_max_request_bytes: usize,
    /// Bytes reserved for fetch responses not yet written, all connections
    /// together. A fetch gets what is left, down to [`FETCH_MIN_GRANT_BYTES`].
    pub fetch_memory_bytes: usize,
    /// The most one fetch response may carry (`fetch.max.bytes`), whatever
    /// the client asks for; the first batch is returned whole as in Kafka.
    pub fetch_max_bytes: usize,
    /// The largest frame a client may send before it has authenticated on a
    /// SASL listener (Kafka's `sasl.server.max.receive.size`).
    pub sasl_max_receive_bytes: usize,
}

impl Default for ListenerSettings {
    fn default() -> Self {
        Self {
            max_connections: 10_000,
            max_connections_per_ip: 1_000,
            idle_timeout: Duration::from_secs(600),
            stall_timeout: Duration::from_secs(60),
            queued_max_request_bytes: 256 * 1024 * 1024,
            fetch_memory_bytes: 256 * 1024 * 1024,
            fetch_max_bytes: 55 * 1024 * 1024,
            sasl_max_receive_bytes: 512 * 1024,
        }
    }
}

/// Frames up to this size are "small": a share of the request pool is kept
/// for them, so that a few large frames that arrive slowly (and hold their
/// whole size while they do) never stop every small request.
pub const SMALL_FRAME_BYTES: usize = 1024 * 1024;

/// What of the request pool is kept for small frames.
pub fn small_frame_reserve(queued_max_request_bytes: usize) -> usize {
    (queued_max_request_bytes / 8).max(2 * SMALL_FRAME_BYTES)
}

/// Memory for the frames of clients that have not authenticated yet, all
/// together: what they can hold is bounded apart from everyone else's, and
/// it is taken as their bytes arrive (a frame that only claims a size holds
/// nothing).
pub const UNAUTHENTICATED_POOL_BYTES: usize = 16 * 1024 * 1024;

/// The longest an unauthenticated client may take to send one frame.
pub const UNAUTHENTICATED_FRAME_DEADLINE: Duration = Duration::from_secs(10);

/// The slowest average rate at which an authenticated client may send a
/// frame, beyond the stall timeout: a 100 MiB frame gets 400 s more.
pub const MIN_FRAME_BYTES_PER_SEC: u64 = 256 * 1024;

/// How long a frame of `size` bytes may take to arrive as a whole, from
/// when its length is read. A trickle of single bytes does not restart it.
pub fn frame_deadline(size: usize, stall: Duration, authenticated: bool) -> Duration {
    if authenticated {
        stall + Duration::from_millis((size as u64).saturating_mul(1000) / MIN_FRAME_BYTES_PER_SEC)
    } else {
        stall.min(UNAUTHENTICATED_FRAME_DEADLINE)
    }
}

/// The smallest fetch reservation worth waiting for: below it a fetch waits
/// for memory instead of answering with next to nothing.
pub const FETCH_MIN_GRANT_BYTES: usize = 1024 * 1024;

/// Why a new connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ConnectionRefusal {
    #[error("the broker already has {0} connections (--max-connections)")]
    TooManyConnections(usize),
    #[error("{ip} already has {count} connections (--max-connections-per-ip)")]
    TooManyFromAddress { ip: IpAddr, count: usize },
}

impl ConnectionRefusal {
    /// The metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            ConnectionRefusal::TooManyConnections(_) => "max_connections",
            ConnectionRefusal::TooManyFromAddress { .. } => "max_connections_per_ip",
        }
    }
}

#[derive(Default)]
struct Counts {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

/// Counts open connections by address; a [`ConnectionSlot`] is held for as
/// long as a connection is open.
pub struct ConnectionCounter {
    max_total: usize,
    max_per_ip: usize,
    counts: Mutex<Counts>,
}

impl ConnectionCounter {
    pub fn new(max_total: usize, max_per_ip: usize) -> Arc<Self> {
        Arc::new(Self {
            max_total,
            max_per_ip,
            counts: Mutex::new(Counts::default()),
        })
    }

    fn counts(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn try_open(self: &Arc<Self>, ip: IpAddr) -> Result<ConnectionSlot, ConnectionRefusal> {
        let mut c = self.counts();
        if c.total >= self.max_total {
            return Err(ConnectionRefusal::TooManyConnections(c.total));
        }
        let from_ip = c.per_ip.get(&ip).copied().unwrap_or(0);
        if from_ip >= self.max_per_ip {
            return Err(ConnectionRefusal::TooManyFromAddress { ip, count: from_ip });
        }
        c.total += 1;
        *c.per_ip.entry(ip).or_default() += 1;
        Ok(ConnectionSlot {
            counter: self.clone(),
            ip,
        })
    }

    pub fn open(&self) -> usize {
        self.counts().total
    }
}

pub struct ConnectionSlot {
    counter: Arc<ConnectionCounter>,
    ip: IpAddr,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let mut c = self.counter.counts();
        c.total -= 1;
        if let Some(n) = c.per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                c.per_ip.remove(&self.ip);
            }
        }
    }
}

/// A pool of bytes shared by all connections, handed out as permits that
/// return to the pool when dropped.
pub struct BytePool {
    capacity: usize,
    semaphore: Arc<Semaphore>,
    /// Bytes that reservations over [`SMALL_FRAME_BYTES`] leave free.
    small_reserve: usize,
}

impl BytePool {
    pub fn new(capacity: usize) -> Self {
        Self::with_small_reserve(capacity, 0)
    }

    /// A pool that large reservations (over [`SMALL_FRAME_BYTES`]) may fill
    /// only up to `small_reserve` bytes short of its capacity.
    pub fn with_small_reserve(capacity: usize, small_reserve: usize) -> Self {
        let capacity = capacity.clamp(1, Semaphore::MAX_PERMITS);
        Self {
            capacity,
            semaphore: Arc::new(Semaphore::new(capacity)),
            small_reserve: small_reserve.min(capacity.saturating_sub(1)),
        }
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn in_use(&self) -> usize {
        self.capacity - self.semaphore.available_permits()
    }

    /// Waits until `bytes` (at most the pool's capacity) are free.
    pub async fn reserve(&self, bytes: usize) -> Reservation {
        let n = bytes.min(self.capacity);
        let permit = match u32::try_from(n) {
            Ok(n) if n > 0 => self.semaphore.clone().acquire_many_owned(n).await.ok(),
            _ => None,
        };
        Reservation {
            bytes: permit.as_ref().map_or(0, |p| p.num_permits()),
            _permit: permit,
        }
    }

    /// `bytes` (at most the capacity) all at once, polling rather than
    /// queueing: a large request waiting for room never holds up smaller ones
    /// that fit now, and nothing is held while waiting, so waiters cannot
    /// deadlock each other (Kafka mutes a connection the same way until its
    /// memory pool has room).
    pub async fn reserve_whole(&self, bytes: usize) -> Reservation {
        let n = u32::try_from(bytes.min(self.capacity)).unwrap_or(u32::MAX);
        if n == 0 {
            return Reservation::default();
        }
        // Small requests look again sooner, so a crowd of large ones waiting
        // for room does not starve them.
        let pause = if n as usize <= 64 * 1024 {
            Duration::from_millis(1)
        } else {
            Duration::from_millis(10)
        };
        // A large reservation leaves the small frames' share free (unless
        // it could then never be granted at all).
        let leave =
            if n as usize > SMALL_FRAME_BYTES && n as usize + self.small_reserve <= self.capacity {
                self.small_reserve
            } else {
                0
            };
        loop {
            if self.semaphore.available_permits() >= n as usize + leave {
                if let Ok(permit) = self.semaphore.clone().try_acquire_many_owned(n) {
                    return Reservation {
                        bytes: permit.num_permits(),
                        _permit: Some(permit),
                    };
                }
            }
            tokio::time::sleep(pause).await;
        }
    }

    /// Up to `wanted` bytes: what is free now if that is at least `floor`,
    /// otherwise waits for `floor`.
    pub async fn reserve_up_to(&self, wanted: usize, floor: usize) -> Reservation {
        let floor = floor.min(wanted);
        let free = self.semaphore.available_permits();
        let grant = wanted.min(free);
        if grant >= floor && grant > 0 {
            if let Ok(permit) = self
                .semaphore
                .clone()
                .try_acquire_many_owned(u32::try_from(grant).unwrap_or(u32::MAX))
            {
                return Reservation {
                    bytes: permit.num_permits(),
                    _permit: Some(permit),
                };
            }
        }
        self.reserve(floor).await
    }
}

/// Bytes held from a [`BytePool`].
#[derive(Default)]
pub struct Reservation {
    pub bytes: usize,
    _permit: Option<OwnedSemaphorePermit>,
}

impl Reservation {
    /// Adds `more` (taken from the same pool) to this reservation.
    pub fn absorb(&mut self, more: Reservation) {
        self.bytes += more.bytes;
        match (&mut self._permit, more._permit) {
            (Some(mine), Some(theirs)) => mine.merge(theirs),
            (mine @ None, theirs) => *mine = theirs,
            (Some(_), None) => {}
        }
    }

    /// Gives back all but `bytes` of this reservation.
    pub fn shrink_to(&mut self, bytes: usize) {
        if bytes >= self.bytes {
            return;
        }
        if let Some(permit) = &mut self._permit {
            drop(permit.split(self.bytes - bytes));
            self.bytes = bytes;
        }
    }
}

/// Where a handler leaves a reservation that must outlive it: a fetch's
/// response bytes stay reserved until the connection has written them.
#[derive(Default)]
pub struct ResponseHold(Mutex<Option<Reservation>>);

impl ResponseHold {
    pub fn keep(&self, reservation: Reservation) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(reservation);
    }
}

impl std::fmt::Debug for ResponseHold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ResponseHold")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_are_limited_in_total_and_per_address() {
        let counter = ConnectionCounter::new(3, 2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let a1 = counter.try_open(a).unwrap();
        let _a2 = counter.try_open(a).unwrap();
        assert_eq!(
            counter.try_open(a).err(),
            Some(ConnectionRefusal::TooManyFromAddress { ip: a, count: 2 })
        );
        let _b1 = counter.try_open(b).unwrap();
        assert_eq!(
            counter.try_open(b).err(),
            Some(ConnectionRefusal::TooManyConnections(3))
        );
        drop(a1);
        assert_eq!(counter.open(), 2);
        assert!(counter.try_open(a).is_ok());
    }

    #[tokio::test]
    async fn a_small_request_is_not_queued_behind_a_large_one() {
        let pool = Arc::new(BytePool::new(100));
        let held = pool.reserve(60).await;
        let large = {
            let pool = pool.clone();
            tokio::spawn(async move { pool.reserve_whole(80).await.bytes })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        // 40 are free: a small request gets them although a large one waits.
        let small = tokio::time::timeout(Duration::from_secs(1), pool.reserve_whole(30))
            .await
            .expect("not queued behind the large request");
        assert_eq!(small.bytes, 30);
        drop((held, small));
        assert_eq!(large.await.unwrap(), 80);
    }

    #[tokio::test]
    async fn large_frames_leave_room_for_small_ones() {
        const MIB: usize = 1024 * 1024;
        let pool = Arc::new(BytePool::with_small_reserve(100 * MIB, 10 * MIB));
        // Large frames that arrive slowly fill what they may...
        let mut large = Vec::new();
        for _ in 0..4 {
            large.push(pool.reserve_whole(22 * MIB).await);
        }
        let fifth = {
            let pool = pool.clone();
            tokio::spawn(async move { pool.reserve_whole(5 * MIB).await.bytes })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            !fifth.is_finished(),
            "a large frame may not take the small frames' share"
        );
        // ...and small requests are still served from the rest.
        for _ in 0..10 {
            let small = tokio::time::timeout(Duration::from_secs(1), pool.reserve_whole(MIB / 2))
                .await
                .expect("a small frame is served while large ones hold the pool");
            assert_eq!(small.bytes, MIB / 2);
        }
        drop(large);
        assert_eq!(fifth.await.unwrap(), 5 * MIB);
    }

    #[test]
    fn a_frame_has_one_deadline_for_all_its_bytes() {
        let stall = Duration::from_secs(60);
        assert_eq!(
            frame_deadline(100, stall, false),
            UNAUTHENTICATED_FRAME_DEADLINE
        );
        assert_eq!(frame_deadline(0, stall, true), stall);
        assert_eq!(
            frame_deadline(100 * 1024 * 1024, stall, true),
            stall + Duration::from_secs(400)
        );
    }

    #[tokio::test]
    async fn reservations_grow_by_what_they_absorb() {
        let pool = BytePool::new(100);
        let mut r = pool.reserve_whole(10).await;
        r.absorb(pool.reserve_whole(30).await);
        assert_eq!((r.bytes, pool.in_use()), (40, 40));
        drop(r);
        assert_eq!(pool.in_use(), 0);
    }

    #[tokio::test]
    async fn a_reservation_shrinks_to_what_was_used() {
        let pool = BytePool::new(100);
        let mut r = pool.reserve(70).await;
        r.shrink_to(20);
        assert_eq!((r.bytes, pool.in_use()), (20, 20));
    }

    #[tokio::test]
    async fn reservations_return_to_the_pool() {
        let pool = BytePool::new(100);
        let r = pool.reserve(60).await;
        assert_eq!((r.bytes, pool.in_use()), (60, 60));
        // Only 40 are free: a fetch takes them rather than waiting.
        let partial = pool.reserve_up_to(80, 10).await;
        assert_eq!(partial.bytes, 40);
        drop(r);
        drop(partial);
        assert_eq!(pool.in_use(), 0);
        // Oversized asks are capped at the capacity instead of waiting forever.
        assert_eq!(pool.reserve(1_000).await.bytes, 100);
    }

    #[tokio::test]
    async fn a_fetch_waits_for_its_floor_when_the_pool_is_nearly_empty() {
        let pool = Arc::new(BytePool::new(100));
        let held = pool.reserve(95).await;
        let waiting = {
            let pool = pool.clone();
            tokio::spawn(async move { pool.reserve_up_to(50, 10).await.bytes })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiting.is_finished(), "5 bytes free is below the floor");
        drop(held);
        assert_eq!(waiting.await.unwrap(), 10);
    }
}
