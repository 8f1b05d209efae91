//! A shard's pool of connections to the other brokers, reused across calls: what the transaction
//! coordinator's WriteTxnMarkers and the partition leaders' KIP-890 verifications (AddPartitionsToTxn
//! `verify_only`) go over. Kafka keeps one NetworkClient per such manager
//! (TransactionMarkerChannelManager, AddPartitionsToTxnManager) holding one connection per
//! destination broker; before this pool every call dialled anew (TCP, TLS, ApiVersions, SASL:
//! several round trips and, over TLS, a handshake's CPU, for one request).
//!
//! Per shard, not per broker: glommio's sockets are !Send, so a connection belongs to one
//! executor; one pool for the process would route every call through the shard mesh to the
//! connection's shard (a cross-core wake-up each way) and need a lock. Per shard, a destination
//! gets at most `shards x MAX_CONNECTIONS_PER_DESTINATION` connections from this broker, the
//! same order as the replica fetchers' one per shard per leader.
//!
//! Per destination broker:
//! - one request in flight per connection, at most `MAX_CONNECTIONS_PER_DESTINATION` connections
//!   in use or being made (a semaphore); callers beyond that wait in FIFO order, at most
//!   `MAX_WAITING_PER_DESTINATION` of them: one more is refused at once (the callers retry:
//!   markers after their back-off, a verification answers a retriable error);
//! - an unused connection waits in an idle list (the most recently used is taken first, so a
//!   surplus ages out); one idle for 3/4 of `connections.max.idle.ms` (Kafka's inter-broker
//!   clients use that key too; the other broker closes at the whole of it) is closed by the
//!   shard's reaper, one the peer closed meanwhile (a peek finds
//!   end of file) or whose broker moved to another address is dropped when taken;
//! - a call that fails (I/O, a response that does not decode or whose correlation id differs,
//!   the caller's timeout) drops its connection and the destination's idle ones (a broker that
//!   went away took them all), so the next call reconnects. A call cancelled mid-way (its caller
//!   dropped it) drops the connection with it: a connection with half a request or an unread
//!   response never goes back to the list.
//!
//! Never: a shard thread blocked (connecting and TLS are glommio I/O; the peek never waits), a
//! connection used by two calls at once (a call owns it while it runs), an unbounded wait (the
//! caller's timeout covers connecting, waiting for the connection and the request).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::time::{Duration, Instant};

use glommio::sync::Semaphore;
use kafka_protocol::messages::ApiKey;
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion};

use crate::security::client::Connection;
use crate::state::BrokerState;

/// Connections in use or being made to one broker from one shard. Kafka's managers keep one per
/// destination; a few let verifications of different producers overlap (Kafka batches them
/// instead, one request per destination in flight).
pub const MAX_CONNECTIONS_PER_DESTINATION: usize = 4;
/// Callers waiting for a connection to one broker from one shard; one more is refused.
pub const MAX_WAITING_PER_DESTINATION: usize = 1024;
/// The reaper's period at most (an idle connection lives at most idle timeout + this).
const REAPER_PERIOD_MAX: Duration = Duration::from_secs(30);

/// One connection not in use, since when, and the address it was made to.
struct Idle {
    connection: Connection,
    address: (String, u16),
    since: Instant,
}

struct Destination {
    /// Most recently used last.
    idle: RefCell<Vec<Idle>>,
    /// A unit per connection in use or being made: idle + in use never exceed the units, since
    /// a connection is made only when the idle list is empty.
    in_use: Semaphore,
    waiting: Cell<usize>,
}

type Destinations = RefCell<HashMap<i32, Rc<Destination>>>;

pub struct InterBrokerPool {
    broker: Arc<BrokerState>,
    destinations: Rc<Destinations>,
    idle_timeout: Duration,
    reaper_started: Cell<bool>,
    /// Connections this pool has made (in the debug log: calls reuse them).
    connections_made: Cell<u64>,
}

/// Gives back a waiting caller's place even when the call is dropped while it waits.
struct WaitingPlace<'a>(&'a Cell<usize>);

impl Drop for WaitingPlace<'_> {
    fn drop(&mut self) {
        self.0.set(self.0.get() - 1);
    }
}

impl InterBrokerPool {
    pub fn new(broker: Arc<BrokerState>) -> InterBrokerPool {
        // Three quarters of the key: the other broker closes connections idle for the whole of
        // it (brokers share their settings), so ours go first and a call rarely meets one closing.
        let idle_timeout = Duration::from_millis((broker.config.connections_max_idle_ms / 4 * 3).max(1));
        InterBrokerPool { broker, destinations: Rc::default(), idle_timeout, reaper_started: Cell::new(false), connections_made: Cell::new(0) }
    }

    /// One request to broker `broker_id`'s inter-broker listener and its response, over a pooled
    /// connection; everything (waiting for a connection, connecting, the round trip) within
    /// `timeout`. Cluster mode only.
    pub async fn call<Q, R>(&self, broker_id: i32, api_key: ApiKey, version: i16, request: &Q, timeout: Duration) -> Result<R, String>
    where
        Q: Encodable + HeaderVersion,
        R: Decodable + HeaderVersion,
    {
        let calling = self.call_within(broker_id, api_key, version, request);
        glommio::timer::timeout(timeout, async { Ok(calling.await) })
            .await
            .unwrap_or_else(|_| Err(format!("{api_key:?} to broker {broker_id}: no answer within {timeout:?}")))
    }

    async fn call_within<Q, R>(&self, broker_id: i32, api_key: ApiKey, version: i16, request: &Q) -> Result<R, String>
    where
        Q: Encodable + HeaderVersion,
        R: Decodable + HeaderVersion,
    {
        let destination = self.destination(broker_id);
        let _permit = {
            if destination.waiting.get() >= MAX_WAITING_PER_DESTINATION {
                return Err(format!("{MAX_WAITING_PER_DESTINATION} calls already wait for a connection to broker {broker_id}"));
            }
            destination.waiting.set(destination.waiting.get() + 1);
            let _place = WaitingPlace(&destination.waiting);
            destination.in_use.acquire_permit(1).await.map_err(|e| format!("the pool to broker {broker_id} is closed: {e}"))?
        };
        let cluster = self.broker.cluster.as_ref().ok_or("inter-broker calls need cluster mode")?;
        let client = self.broker.security.inter_broker.as_ref().ok_or("cluster mode builds the inter-broker client")?;
        let snapshot = cluster.view.snapshot();
        let address = client.address(&snapshot, broker_id)?;
        let mut connection = match self.take_idle(&destination, &address) {
            Some(connection) => connection,
            None => {
                let connection = client.connect(&snapshot, broker_id, self.broker.config.broker_id).await?;
                self.connections_made.set(self.connections_made.get() + 1);
                tracing::debug!(broker_id, made = self.connections_made.get(), "inter-broker connection made");
                self.start_reaper();
                connection
            }
        };
        match connection.call(api_key, version, request).await {
            Ok(response) => {
                destination.idle.borrow_mut().push(Idle { connection, address, since: Instant::now() });
                Ok(response)
            }
            Err(e) => {
                // `connection` drops here; the idle ones likely went the same way.
                destination.idle.borrow_mut().clear();
                Err(format!("{api_key:?} to broker {broker_id}: {e}"))
            }
        }
    }

    fn destination(&self, broker_id: i32) -> Rc<Destination> {
        self.destinations
            .borrow_mut()
            .entry(broker_id)
            .or_insert_with(|| {
                Rc::new(Destination { idle: RefCell::default(), in_use: Semaphore::new(MAX_CONNECTIONS_PER_DESTINATION as u64), waiting: Cell::new(0) })
            })
            .clone()
    }

    /// The most recently used idle connection still good for `address`; the stale ones go.
    fn take_idle(&self, destination: &Destination, address: &(String, u16)) -> Option<Connection> {
        let mut idle = destination.idle.borrow_mut();
        while let Some(candidate) = idle.pop() {
            if candidate.since.elapsed() < self.idle_timeout && candidate.address == *address && !candidate.connection.peer_closed() {
                return Some(candidate.connection);
            }
            tracing::debug!(address = ?candidate.address, "dropping a stale inter-broker connection");
        }
        None
    }

    /// Closes connections idle for the idle timeout, every half of it (at most
    /// `REAPER_PERIOD_MAX`), for as long as the pool lives. Started with the first connection,
    /// so a standalone broker runs none.
    fn start_reaper(&self) {
        if self.reaper_started.replace(true) {
            return;
        }
        let destinations: Weak<Destinations> = Rc::downgrade(&self.destinations);
        let (idle_timeout, period) = (self.idle_timeout, (self.idle_timeout / 2).clamp(Duration::from_millis(1), REAPER_PERIOD_MAX));
        glommio::spawn_local(async move {
            loop {
                glommio::timer::sleep(period).await;
                let Some(destinations) = destinations.upgrade() else { return };
                for (broker_id, destination) in destinations.borrow().iter() {
                    let mut idle = destination.idle.borrow_mut();
                    let before = idle.len();
                    idle.retain(|entry| entry.since.elapsed() < idle_timeout);
                    if idle.len() < before {
                        tracing::debug!(broker_id, closed = before - idle.len(), "idle inter-broker connections closed");
                    }
                }
            }
        })
        .detach();
    }
}
