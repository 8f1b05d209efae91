//! One shard's context: what a request or a task on this shard reaches through `Rc<Shard>` (its
//! partitions, its groups, its router to the other shards, its splice sender). Lives on the
//! shard's thread only.
//!
//! Never: nothing below (`partition`, `groups`, `replication`) takes a `Shard`'s fields other
//! than through what it is given; `groups` does not import this module.

use std::rc::Rc;
use std::sync::Arc;

use shard::notify::Notify;
use shard::Router;

use crate::fetch_session::FetchSessionCache;
use crate::groups::GroupCoordinator;
use crate::inter_broker::marker_channel::MarkerChannel;
use crate::inter_broker::pool::InterBrokerPool;
use crate::partition::{Partition, PartitionError, PartitionTable};
use crate::splice_sender::SpliceSender;
use crate::state::BrokerState;
use crate::txn::TxnCoordinator;

pub struct Shard {
    pub router: Rc<Router<Shard>>,
    pub broker: Arc<BrokerState>,
    /// The partitions this shard owns.
    pub partitions: Rc<PartitionTable>,
    /// Fired once when the broker begins a graceful shutdown: idle connections close.
    pub shutdown: Notify,
    /// Open connections on this shard (the limits are broker-wide: `BrokerState::connection_quotas`).
    pub connections: std::cell::Cell<usize>,
    /// The consumer groups whose `__consumer_offsets` partition this shard owns.
    pub groups: Rc<GroupCoordinator>,
    /// The transactional ids whose `__transaction_state` partition this shard owns.
    pub txns: Rc<TxnCoordinator>,
    /// Sends fetched file regions to sockets without copying; None on the copy path.
    pub splice_sender: Option<Rc<SpliceSender>>,
    /// The fetch sessions of fetchers whose connection is on this shard (see `fetch_session`).
    pub fetch_sessions: FetchSessionCache,
    /// Cluster mode: this shard's reusable connections to the other brokers (markers, KIP-890
    /// verification; `inter_broker/pool.rs`).
    pub inter_broker: Rc<InterBrokerPool>,
    /// Transaction markers for other brokers, batched per destination (`inter_broker/marker_channel.rs`).
    pub marker_channel: MarkerChannel,
}

impl Shard {
    /// Must run on the shard's executor (the splice sender starts a task there).
    pub fn new(router: Rc<Router<Shard>>, broker: Arc<BrokerState>) -> Shard {
        let splice_sender = if broker.config.fetch_zero_copy {
            match SpliceSender::start() {
                Ok(sender) => Some(sender),
                Err(e) => {
                    tracing::warn!(shard = router.shard_id(), error = %e, "no io_uring splice here: fetches fall back to the copy path");
                    None
                }
            }
        } else {
            None
        };
        let partitions = Rc::new(PartitionTable::new(broker.clone(), router.shard_id(), router.shard_count()));
        let groups = Rc::new(GroupCoordinator::new(broker.clone(), partitions.clone(), router.shard_id()));
        let txns = Rc::new(TxnCoordinator::new(broker.clone(), partitions.clone(), router.shard_id()));
        let fetch_sessions = FetchSessionCache::new(broker.config.max_incremental_fetch_session_cache_slots, router.shard_id(), router.shard_count());
        let inter_broker = Rc::new(InterBrokerPool::new(broker.clone()));
        let marker_channel = MarkerChannel::new(inter_broker.clone());
        Shard {
            inter_broker,
            marker_channel,
            fetch_sessions,
            splice_sender,
            partitions,
            router,
            broker,
            shutdown: Notify::default(),
            connections: std::cell::Cell::new(0),
            groups,
            txns,
        }
    }

    pub fn id(&self) -> usize {
        self.router.shard_id()
    }

    pub fn owner_of(&self, topic: &str, partition: i32) -> usize {
        self.broker.config.owner_shard(topic, partition, self.router.shard_count())
    }

    /// The partition for serving clients (cluster mode: only while this broker leads it). Only
    /// the owning shard may call this.
    pub async fn partition(&self, topic: &str, partition: i32) -> Result<Rc<Partition>, PartitionError> {
        self.partitions.serving(topic, partition).await
    }
}
