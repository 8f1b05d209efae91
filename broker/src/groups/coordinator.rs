//! The group coordinator of one shard: the state every group operation works on (the groups
//! whose `__consumer_offsets` partition this shard owns, which of those partitions it holds, the
//! queue of writes to them) and the checks shared by every group API.
//!
//! Contract: one `GroupCoordinator` per shard, living on that shard's thread only; only the
//! group's shard touches a group (the handlers route there). It is given at construction what it
//! needs from the shard (the broker state, the shard's partition table, the shard's id), so
//! nothing in `groups/` reaches back into the shard's context, the handlers or the router: the
//! shard holds the coordinator, never the other way round. The group map is borrowed only
//! between awaits. Error precedence follows Kafka's GroupCoordinator.scala so clients react as
//! they do there.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;

use kafka_protocol::ResponseError;

use super::group::Group;
use super::offsets_writer::OffsetsQueue;
use super::{offsets_partition_count, partition_for_group};
use crate::partition::PartitionTable;
use crate::state::BrokerState;

pub(super) const NONE: i16 = 0;

/// Cluster mode: where this shard stands with one `__consumer_offsets` partition it leads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PartitionLoad {
    /// Its groups are being read from the log: COORDINATOR_LOAD_IN_PROGRESS meanwhile.
    Loading,
    Loaded,
}

pub struct GroupCoordinator {
    pub(super) broker: Arc<BrokerState>,
    /// The shard's partitions: `__consumer_offsets` is read and appended through them.
    pub(super) partitions: Rc<PartitionTable>,
    /// The shard's id, for logs.
    pub(super) shard_id: usize,
    pub(super) groups: RefCell<HashMap<String, Group>>,
    /// Cluster mode: the `__consumer_offsets` partitions whose groups this shard holds (this
    /// broker leads them). Standalone coordinates every group of its partitions from start-up.
    pub(super) held_partitions: RefCell<HashMap<i32, PartitionLoad>>,
    /// Writes go through one queue per shard so they reach the log in the order they were made
    /// (a tombstone never overtakes the commit it deletes).
    pub(super) writes: OffsetsQueue,
    /// Transactional offset commits (TxnOffsetCommit) written but not yet committed, by
    /// producer id: (`__consumer_offsets` partition, group, topic, partition, offset). The
    /// transaction's marker makes them the group's offsets or drops them (`txn_offsets`).
    pub(super) pending_txn_offsets: RefCell<HashMap<i64, Vec<super::txn_offsets::PendingOffset>>>,
}

impl GroupCoordinator {
    pub fn new(broker: Arc<BrokerState>, partitions: Rc<PartitionTable>, shard_id: usize) -> GroupCoordinator {
        GroupCoordinator {
            broker,
            partitions,
            shard_id,
            groups: RefCell::new(HashMap::new()),
            held_partitions: RefCell::new(HashMap::new()),
            writes: OffsetsQueue::new(),
            pending_txn_offsets: RefCell::new(HashMap::new()),
        }
    }

    /// The `__consumer_offsets` partition that stores `group_id`.
    pub(super) fn offsets_partition(&self, group_id: &str) -> i32 {
        partition_for_group(group_id, offsets_partition_count(&self.broker))
    }
}

pub(super) fn code(error: ResponseError) -> i16 {
    error.code()
}

/// None when this shard coordinates `group_id`; else the error every group API answers with
/// (clients then look for the coordinator again). Standalone: always this shard (the handlers
/// route there).
pub fn coordinator_error(coordinator: &GroupCoordinator, group_id: &str) -> Option<i16> {
    coordinator.broker.cluster.as_ref()?;
    let partition = coordinator.offsets_partition(group_id);
    match coordinator.held_partitions.borrow().get(&partition) {
        Some(PartitionLoad::Loaded) => None,
        Some(PartitionLoad::Loading) => Some(code(ResponseError::CoordinatorLoadInProgress)),
        None => Some(code(ResponseError::NotCoordinator)),
    }
}
