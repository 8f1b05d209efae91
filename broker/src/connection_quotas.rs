//! Connection limits (issue 21), as Kafka's `ConnectionQuotas` (core/.../network/SocketServer.scala):
//! `max.connections` for the whole broker, `listener.name.<l>.max.connections` per listener,
//! `max.connections.per.ip` with `max.connections.per.ip.overrides` per client address.
//!
//! What Kafka does over a limit, and what it maps to here (the accept loops in `tasks.rs`, one per
//! listener per accepting shard, each on its own SO_REUSEPORT socket):
//! - Broker-wide or listener limit reached: Kafka's acceptor thread blocks in `inc` (after
//!   `accept`) until a connection closes; meanwhile new connections wait in the kernel's listen
//!   backlog, nobody is refused. Here an accept loop that cannot take a slot keeps the connection
//!   it accepted unserved and stops accepting until a slot frees (`take_slot` below is polled by
//!   `tasks::accept_connections`): the same effect per shard, and each shard's backlog waits as
//!   Kafka's one backlog does. The inter-broker listener is exempt from the broker-wide limit
//!   when there are other listeners (Kafka's "protected listener"; Kafka also closes the least
//!   recently used connection of another listener then: not done here).
//! - Per-IP limit reached: Kafka closes the new connection at once (`TooManyConnectionsException`)
//!   and so do we; the limit is checked after the broker-wide wait, as Kafka's `inc` does.
//!
//! Why shared atomics (and one mutex for the per-IP map): the limits are broker-wide while
//! connections are accepted and closed on every shard, and SO_REUSEPORT spreads them unevenly
//! (a per-shard share of the limit would refuse on one shard while another has room). These
//! counters are touched twice per connection (accept, close), never per request, so the cache
//! line they share costs nothing measurable, and a compare-and-swap keeps the limit exact with
//! no cross-shard message on the accept path. The per-IP map is only used when a per-IP limit is
//! configured; its lock is held for one hash-map update.

use std::collections::HashMap;
use std::net::{IpAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// Kafka's defaults: no limit (Int.MaxValue) for max.connections and max.connections.per.ip.
pub const UNLIMITED: usize = i32::MAX as usize;

/// Refusals and waits are logged at most this often (not once per connection: a client in a
/// reconnect loop would flood the log).
const REFUSAL_LOG_EVERY_MS: i64 = 60_000;

/// The limits as configured (`config.rs` parses the keys with `parse_overrides`).
#[derive(Debug, Clone)]
pub struct ConnectionLimits {
    pub max_per_ip: usize,
    pub per_ip_overrides: HashMap<IpAddr, usize>,
}

impl Default for ConnectionLimits {
    fn default() -> ConnectionLimits {
        ConnectionLimits { max_per_ip: UNLIMITED, per_ip_overrides: HashMap::new() }
    }
}

/// `max.connections.per.ip.overrides=host:count,...` (Kafka resolves host names once, at start).
pub fn parse_overrides(key: &str, value: &str) -> Result<HashMap<IpAddr, usize>, String> {
    let mut overrides = HashMap::new();
    for entry in value.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (host, count) = entry.rsplit_once(':').ok_or_else(|| format!("{key}: {entry:?} is not host:count"))?;
        let count: usize = count.trim().parse().map_err(|_| format!("{key}: {entry:?}: the count is not a number >= 0"))?;
        let host = host.trim().trim_start_matches('[').trim_end_matches(']');
        let ip = match host.parse::<IpAddr>() {
            Ok(ip) => ip,
            Err(_) => (host, 0)
                .to_socket_addrs()
                .ok()
                .and_then(|mut addresses| addresses.next())
                .map(|address| address.ip())
                .ok_or_else(|| format!("{key}: cannot resolve host {host:?}"))?,
        };
        overrides.insert(ip, count);
    }
    Ok(overrides)
}

/// Why a connection was not served.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// No slot under `max.connections` or the listener's limit: wait (Kafka's acceptor blocks).
    Full,
    /// The client address has its `max.connections.per.ip` (or override): close at once.
    TooManyFromIp { limit: usize },
}

pub struct ConnectionQuotas {
    max_total: usize,
    /// Per listener (index in `config.listeners`); UNLIMITED when not set.
    listener_max: Vec<usize>,
    /// The inter-broker listener, exempt from `max_total` when there are several listeners.
    protected_listener: Option<usize>,
    limits: ConnectionLimits,
    total: AtomicUsize,
    per_listener: Vec<AtomicUsize>,
    /// Connections per client address; only kept when a per-IP limit exists.
    per_ip: Option<Mutex<HashMap<IpAddr, usize>>>,
    /// Since the last refusal log line: connections closed over a per-IP limit.
    refused_since_log: AtomicU64,
    last_refusal_log_ms: AtomicI64,
    last_full_log_ms: AtomicI64,
}

/// A connection's place under the limits, given back when dropped (the connection ends).
pub struct Slot {
    quotas: Arc<ConnectionQuotas>,
    listener: usize,
    ip: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.quotas.release(self.listener, Some(self.ip));
    }
}

impl ConnectionQuotas {
    /// `listener_max` has one entry per listener; `protected_listener` is the inter-broker one.
    pub fn new(max_total: usize, listener_max: Vec<usize>, protected_listener: usize, limits: ConnectionLimits) -> ConnectionQuotas {
        let per_ip_limited = limits.max_per_ip < UNLIMITED || !limits.per_ip_overrides.is_empty();
        let protected_listener = (listener_max.len() > 1).then_some(protected_listener);
        ConnectionQuotas {
            max_total,
            per_listener: listener_max.iter().map(|_| AtomicUsize::new(0)).collect(),
            listener_max,
            protected_listener,
            limits,
            total: AtomicUsize::new(0),
            per_ip: per_ip_limited.then(|| Mutex::new(HashMap::new())),
            refused_since_log: AtomicU64::new(0),
            last_refusal_log_ms: AtomicI64::new(i64::MIN / 2),
            last_full_log_ms: AtomicI64::new(i64::MIN / 2),
        }
    }

    /// Takes a slot for a connection accepted on `listener` from `ip`, or says why not. On
    /// `Full` nothing is taken: the caller keeps the connection and asks again later.
    pub fn take_slot(self: &Arc<Self>, listener: usize, ip: IpAddr) -> Result<Slot, Refusal> {
        if !take_below(&self.per_listener[listener], self.listener_max[listener]) {
            return Err(Refusal::Full);
        }
        if self.protected_listener == Some(listener) {
            self.total.fetch_add(1, Ordering::AcqRel);
        } else if !take_below(&self.total, self.max_total) {
            self.per_listener[listener].fetch_sub(1, Ordering::AcqRel);
            return Err(Refusal::Full);
        }
        if let Some(per_ip) = &self.per_ip {
            let limit = self.limits.per_ip_overrides.get(&ip).copied().unwrap_or(self.limits.max_per_ip);
            let mut counts = per_ip.lock().expect("per-IP connection counts");
            let count = counts.entry(ip).or_insert(0);
            if *count >= limit {
                drop(counts);
                self.release(listener, None);
                return Err(Refusal::TooManyFromIp { limit });
            }
            *count += 1;
        }
        Ok(Slot { quotas: self.clone(), listener, ip })
    }

    fn release(&self, listener: usize, ip: Option<IpAddr>) {
        let before = self.per_listener[listener].fetch_sub(1, Ordering::AcqRel);
        assert!(before > 0, "listener {listener}: a connection released twice");
        let before = self.total.fetch_sub(1, Ordering::AcqRel);
        assert!(before > 0, "a connection released twice");
        if let (Some(per_ip), Some(ip)) = (&self.per_ip, ip) {
            let mut counts = per_ip.lock().expect("per-IP connection counts");
            let count = counts.get_mut(&ip).expect("a counted address");
            *count -= 1;
            if *count == 0 {
                counts.remove(&ip);
            }
        }
    }

    /// Open connections, broker-wide.
    pub fn total(&self) -> usize {
        self.total.load(Ordering::Acquire)
    }

    /// A per-IP refusal happened at `now_ms`: returns how many to report when a log line is
    /// due (the first refusal, then at most one line a minute), else None.
    pub fn refusal_to_log(&self, now_ms: i64) -> Option<u64> {
        self.refused_since_log.fetch_add(1, Ordering::AcqRel);
        due(&self.last_refusal_log_ms, now_ms).then(|| self.refused_since_log.swap(0, Ordering::AcqRel))
    }

    /// Accepting paused at a limit at `now_ms`: true when a log line is due (once a minute).
    pub fn full_to_log(&self, now_ms: i64) -> bool {
        due(&self.last_full_log_ms, now_ms)
    }
}

/// Increments `counter` if it is below `max`; false (and unchanged) otherwise.
fn take_below(counter: &AtomicUsize, max: usize) -> bool {
    counter.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < max).then_some(n + 1)).is_ok()
}

/// True for one caller per REFUSAL_LOG_EVERY_MS.
fn due(last_ms: &AtomicI64, now_ms: i64) -> bool {
    let last = last_ms.load(Ordering::Acquire);
    now_ms - last >= REFUSAL_LOG_EVERY_MS && last_ms.compare_exchange(last, now_ms, Ordering::AcqRel, Ordering::Acquire).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn per_ip_limit_and_overrides() {
        let limits = ConnectionLimits { max_per_ip: 2, per_ip_overrides: parse_overrides("k", "127.0.0.2:3, 127.0.0.9:0").unwrap() };
        let quotas = Arc::new(ConnectionQuotas::new(UNLIMITED, vec![UNLIMITED], 0, limits));
        let a: Vec<Slot> = (0..2).map(|_| quotas.take_slot(0, ip("127.0.0.1")).unwrap()).collect();
        assert_eq!(quotas.take_slot(0, ip("127.0.0.1")).err(), Some(Refusal::TooManyFromIp { limit: 2 }));
        let b: Vec<Slot> = (0..3).map(|_| quotas.take_slot(0, ip("127.0.0.2")).unwrap()).collect();
        assert!(quotas.take_slot(0, ip("127.0.0.2")).is_err());
        assert!(quotas.take_slot(0, ip("127.0.0.9")).is_err());
        assert_eq!(quotas.total(), 5);
        drop(a);
        assert_eq!(quotas.total(), 3);
        assert!(quotas.take_slot(0, ip("127.0.0.1")).is_ok());
        drop(b);
        assert_eq!(quotas.total(), 0);
    }

    #[test]
    fn broker_and_listener_limits_wait_and_the_inter_broker_listener_is_exempt() {
        let quotas = Arc::new(ConnectionQuotas::new(3, vec![UNLIMITED, 1, UNLIMITED], 2, ConnectionLimits::default()));
        let one = quotas.take_slot(1, ip("127.0.0.1")).unwrap();
        assert_eq!(quotas.take_slot(1, ip("127.0.0.1")).err(), Some(Refusal::Full));
        let _two = quotas.take_slot(0, ip("127.0.0.1")).unwrap();
        let _three = quotas.take_slot(0, ip("127.0.0.1")).unwrap();
        assert_eq!(quotas.take_slot(0, ip("127.0.0.1")).err(), Some(Refusal::Full));
        let inter_broker = quotas.take_slot(2, ip("127.0.0.1")).unwrap();
        assert_eq!(quotas.total(), 4);
        // The inter-broker connection counts in the total, as in Kafka.
        drop(one);
        assert_eq!(quotas.take_slot(0, ip("127.0.0.1")).err(), Some(Refusal::Full));
        drop(inter_broker);
        assert!(quotas.take_slot(0, ip("127.0.0.1")).is_ok());
    }

    #[test]
    fn refusals_are_logged_once_a_minute() {
        let quotas = ConnectionQuotas::new(UNLIMITED, vec![UNLIMITED], 0, ConnectionLimits::default());
        assert_eq!(quotas.refusal_to_log(1_000), Some(1));
        assert_eq!(quotas.refusal_to_log(2_000), None);
        assert_eq!(quotas.refusal_to_log(30_000), None);
        assert_eq!(quotas.refusal_to_log(61_000), Some(3));
    }

    #[test]
    fn bad_overrides_are_errors() {
        assert!(parse_overrides("k", "127.0.0.1").is_err());
        assert!(parse_overrides("k", "127.0.0.1:x").is_err());
        assert!(parse_overrides("k", "127.0.0.1:-1").is_err());
        assert_eq!(parse_overrides("k", "").unwrap().len(), 0);
    }
}
