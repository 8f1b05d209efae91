//! What a scrape collects: every shard's counters (a copy of its thread-local, taken on that
//! shard over the router) and the gauges computed there from state the shard keeps anyway
//! (open partitions, leadership, producers, groups). The broker-wide gauges (controller,
//! offline partitions) come from the ZooKeeper snapshot.

use std::collections::BTreeMap;
use std::rc::Rc;

use crate::metrics::registry::{self, ShardMetrics};
use crate::groups::admin as group_admin;
use crate::shard_context::Shard;

/// One shard's part of a scrape.
pub struct ShardReport {
    pub shard: usize,
    pub metrics: ShardMetrics,
    pub cross_shard_calls: u64,
    pub connections: u64,
    /// Replicas this shard has open (Kafka's PartitionCount counts every replica on the broker).
    pub partitions: u64,
    pub leaders: u64,
    pub under_replicated: u64,
    pub producer_ids: u64,
    /// Group state name (Kafka's: Stable, Empty...) -> groups this shard coordinates.
    pub groups_by_state: BTreeMap<String, u64>,
    /// Fetch sessions held on this shard and the partitions they cache.
    pub fetch_sessions: u64,
    pub fetch_session_partitions: u64,
}

/// What the whole broker knows.
pub struct BrokerReport {
    pub active_controller: bool,
    /// Kafka reports offline partitions on the controller only (0 elsewhere); so do we.
    pub offline_partitions: u64,
}

pub async fn gather(shard: &Rc<Shard>) -> (Vec<ShardReport>, BrokerReport) {
    let mut reports = Vec::with_capacity(shard.router.shard_count());
    for owner in 0..shard.router.shard_count() {
        reports.push(shard.router.call(owner, |owner| async move { report_here(&owner) }).await);
    }
    (reports, broker_report(shard))
}

fn report_here(shard: &Shard) -> ShardReport {
    let me = shard.broker.config.broker_id;
    let snapshot = shard.broker.cluster.as_ref().map(|cluster| cluster.view.snapshot());
    let open = shard.partitions.all_open();
    let (mut leaders, mut under_replicated, mut producer_ids) = (0, 0, 0);
    for partition in &open {
        let leads = match &snapshot {
            None => true,
            Some(snapshot) => match snapshot.state(&partition.topic, partition.index) {
                Some(state) if state.leader == me => {
                    let replicas = snapshot.topics.get(&partition.topic).and_then(|t| t.replicas.get(partition.index as usize));
                    under_replicated += u64::from(replicas.is_some_and(|r| state.isr.len() < r.len()));
                    true
                }
                _ => false,
            },
        };
        if leads {
            leaders += 1;
            producer_ids += partition.producer_summaries().len() as u64;
        }
    }
    let mut groups_by_state = BTreeMap::new();
    for group in group_admin::list(&shard.groups) {
        *groups_by_state.entry(group.state).or_insert(0) += 1;
    }
    let (fetch_sessions, fetch_session_partitions) = shard.fetch_sessions.sizes();
    ShardReport {
        fetch_sessions,
        fetch_session_partitions,
        shard: shard.id(),
        metrics: registry::snapshot(),
        cross_shard_calls: shard::runtime::cross_shard_calls_sent(),
        connections: shard.connections.get() as u64,
        partitions: open.len() as u64,
        leaders,
        under_replicated,
        producer_ids,
        groups_by_state,
    }
}

fn broker_report(shard: &Shard) -> BrokerReport {
    let Some(cluster) = &shard.broker.cluster else {
        // A single broker is its own controller (Metadata names it) and all its partitions
        // have their leader.
        return BrokerReport { active_controller: true, offline_partitions: 0 };
    };
    let me = shard.broker.config.broker_id;
    if cluster.view.controller_id() != me {
        return BrokerReport { active_controller: false, offline_partitions: 0 };
    }
    let snapshot = cluster.view.snapshot();
    let offline = snapshot
        .topics
        .values()
        .flat_map(|topic| topic.states.iter())
        .filter(|state| !state.as_ref().is_some_and(|s| s.leader >= 0 && snapshot.brokers.contains_key(&s.leader)))
        .count();
    BrokerReport { active_controller: true, offline_partitions: offline as u64 }
}
