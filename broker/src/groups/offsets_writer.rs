//! The writes to `__consumer_offsets`: one bounded queue per shard, and the shard's writer task
//! that appends what is queued, in order.
//!
//! Contract: records reach the log in the order they were made (a tombstone never overtakes the
//! commit it deletes, a group's records never overtake its earlier ones), because every write
//! enters the one queue, and enters it in turn: whoever waits for room holds the turn, first come
//! first served, and nobody slips past a writer that waits.
//!
//! Bounded, so a writer that falls behind (a slow disk, a burst of rebalances, a retention pass
//! over many groups) holds the memory of at most `QUEUE_CAPACITY` writes, not of every write
//! made meanwhile:
//! - A write someone waits for (an OffsetCommit, OffsetDelete, DeleteGroups) or that its caller
//!   can wait for (the offsets retention pass) awaits room: its caller is async anyway, and the
//!   wait is the back-pressure (the request is answered later, nothing is lost).
//! - A group's membership record (`membership::store_group`) is made by synchronous code that
//!   holds the group map (join, sync, leave, the session timers): it cannot wait, so when the
//!   queue is full, or someone already waits for room, it is dropped with a warning. That loses
//!   no committed offset: a membership record only carries members, generation and assignment
//!   (loading one never touches a group's offsets, see `loader::apply_stored`), tombstones are
//!   never dropped, and the group's next membership record (the next rebalance) carries its
//!   whole state again. Until then a restart would load the group's previous membership.

use std::cell::RefCell;
use std::rc::Rc;
use std::task::Poll;

use bytes::Bytes;
use futures_channel::{mpsc, oneshot};
use futures_lite::StreamExt;
use glommio::sync::Semaphore;
use kafka_protocol::ResponseError;

use super::coordinator::{code, GroupCoordinator};
use super::offsets_topic;
use crate::clock::now_ms;
use crate::partition::{AppendError, AppendOrigin, HighWatermarkWaitError, Partition, PartitionError};
use crate::topics::CONSUMER_OFFSETS_TOPIC;

/// How many writes a shard's queue holds (futures-channel adds one slot for its one sender). A
/// write is one batch (an offset commit, or one group's membership record: a few hundred bytes
/// to some KiB with large assignments), and the writer appends one in tens of microseconds (a
/// buffered write, no fsync), so 1024 absorb a burst of rebalances or a retention pass over
/// many groups without dropping a membership record, while a stalled log holds a few MiB at most.
const QUEUE_CAPACITY: usize = 1024;

/// A batch of records for one `__consumer_offsets` partition, and who waits for it.
pub struct OffsetsWrite {
    pub partition: i32,
    pub records: Vec<(Bytes, Option<Bytes>)>,
    pub done: Option<oneshot::Sender<Result<(), i16>>>,
    /// A transactional offset commit (TxnOffsetCommit): the producer's (id, epoch), written as a
    /// transactional batch that the transaction's marker commits or aborts.
    pub producer: Option<(i64, i16)>,
}

/// A shard's queue of writes to `__consumer_offsets`.
pub(super) struct OffsetsQueue {
    /// None once closed (shutdown).
    sender: RefCell<Option<mpsc::Sender<OffsetsWrite>>>,
    /// Taken by the writer task when it starts.
    receiver: RefCell<Option<mpsc::Receiver<OffsetsWrite>>>,
    /// The turn to enter the queue: whoever waits for room holds it, so writes enter in the
    /// order they were made (glommio's semaphore serves its waiters first come first served),
    /// and only one task at a time polls the one sender (it keeps one waker).
    turn: Semaphore,
}

impl OffsetsQueue {
    pub(super) fn new() -> OffsetsQueue {
        let (sender, receiver) = mpsc::channel(QUEUE_CAPACITY);
        OffsetsQueue { sender: RefCell::new(Some(sender)), receiver: RefCell::new(Some(receiver)), turn: Semaphore::new(1) }
    }

    /// Queues `writes` in order, each once the queue has room. A write the queue cannot take
    /// (closed at shutdown) is answered NOT_COORDINATOR.
    async fn push(&self, writes: impl IntoIterator<Item = OffsetsWrite>) {
        let _turn = self.turn.acquire_permit(1).await.expect("the queue's turn is never closed");
        for write in writes {
            let room = futures_lite::future::poll_fn(|cx| match self.sender.borrow_mut().as_mut() {
                Some(sender) => sender.poll_ready(cx).map(|ready| ready.is_ok()),
                None => Poll::Ready(false),
            })
            .await;
            let sent = match self.sender.borrow_mut().as_mut() {
                Some(sender) if room => sender.try_send(write).map_err(|e| e.into_inner()),
                _ => Err(write),
            };
            if let Err(write) = sent {
                refuse(write);
            }
        }
    }

    /// Queues `write` now if the queue has room and nobody waits for it; else gives it back,
    /// with whether the queue was full (not closed).
    fn push_now(&self, write: OffsetsWrite) -> Result<(), (OffsetsWrite, bool)> {
        let Ok(_turn) = self.turn.try_acquire_permit(1) else { return Err((write, true)) };
        match self.sender.borrow_mut().as_mut() {
            Some(sender) => sender.try_send(write).map_err(|e| {
                let full = e.is_full();
                (e.into_inner(), full)
            }),
            None => Err((write, false)),
        }
    }
}

/// Answers whoever waits for a write that was not queued.
fn refuse(write: OffsetsWrite) {
    if let Some(done) = write.done {
        let _ = done.send(Err(code(ResponseError::NotCoordinator)));
    }
}

fn offsets_write(
    coordinator: &GroupCoordinator,
    group_id: &str,
    records: Vec<(Bytes, Option<Bytes>)>,
    done: Option<oneshot::Sender<Result<(), i16>>>,
) -> OffsetsWrite {
    OffsetsWrite { partition: coordinator.offsets_partition(group_id), records, done, producer: None }
}

/// Writes `records` of `group_id` and returns once they are in the log (cluster mode: in the
/// ISR); waits for room in the queue first.
pub(super) async fn write_and_wait(coordinator: &GroupCoordinator, group_id: &str, records: Vec<(Bytes, Option<Bytes>)>) -> Result<(), i16> {
    let (sender, receiver) = oneshot::channel();
    coordinator.writes.push([offsets_write(coordinator, group_id, records, Some(sender))]).await;
    receiver.await.unwrap_or(Err(code(ResponseError::NotCoordinator)))
}

/// Writes a transactional offset commit of `producer` (id, epoch) and returns once it is in the
/// log (cluster mode: in the ISR), as `write_and_wait`.
pub(super) async fn write_transactional_and_wait(
    coordinator: &GroupCoordinator,
    group_id: &str,
    records: Vec<(Bytes, Option<Bytes>)>,
    producer: (i64, i16),
) -> Result<(), i16> {
    let (sender, receiver) = oneshot::channel();
    let mut write = offsets_write(coordinator, group_id, records, Some(sender));
    write.producer = Some(producer);
    coordinator.writes.push([write]).await;
    receiver.await.unwrap_or(Err(code(ResponseError::NotCoordinator)))
}

/// Queues each group's records, in order, waiting for room; nobody waits for the appends.
pub(super) async fn write_all(coordinator: &GroupCoordinator, writes: Vec<(String, Vec<(Bytes, Option<Bytes>)>)>) {
    let writes = writes.into_iter().map(|(group_id, records)| offsets_write(coordinator, &group_id, records, None));
    coordinator.writes.push(writes).await;
}

/// Queues a group's membership record if the queue has room now and nobody waits for it; else
/// drops it with a warning (the module's doc says why that is safe). Nobody waits for it.
pub(super) fn write_unless_full(coordinator: &GroupCoordinator, group_id: &str, records: Vec<(Bytes, Option<Bytes>)>) {
    if let Err((_, true)) = coordinator.writes.push_now(offsets_write(coordinator, group_id, records, None)) {
        tracing::warn!(
            group = group_id,
            capacity = QUEUE_CAPACITY,
            "__consumer_offsets write queue full: a group membership record is dropped (offsets are not affected)"
        );
    }
}

/// Cluster mode: how long an offset commit waits for the ISR to have its records (Kafka's
/// `offsets.commit.timeout.ms` default) before it is answered REQUEST_TIMED_OUT.
const OFFSETS_COMMIT_TIMEOUT_MS: i32 = 5_000;

/// The shard's writer: appends queued records to `__consumer_offsets` in order, until the queue
/// is closed at shutdown and drained. In cluster mode a write someone waits for is answered
/// once the partition's ISR has it (Kafka commits offsets with acks=all), so a committed offset
/// survives the coordinator's failover; the wait runs beside the writer, so later writes do not
/// queue behind replication.
pub async fn run_writer(coordinator: Rc<GroupCoordinator>) {
    let Some(mut receiver) = coordinator.writes.receiver.borrow_mut().take() else { return };
    while let Some(write) = receiver.next().await {
        let partition = write.partition;
        if write.done.is_some() {
            if let Some(reason) = coordinator.broker.not_enough_replicas(CONSUMER_OFFSETS_TOPIC, partition, -1) {
                tracing::warn!(partition, reason, "offset commit refused");
                let _ = write.done.map(|done| done.send(Err(code(ResponseError::CoordinatorNotAvailable))));
                continue;
            }
        }
        let (handle, end_offset) = match append(&coordinator, partition, &write.records, write.producer).await {
            Ok(appended) => appended,
            Err((error_code, error)) => {
                tracing::error!(partition, error, "writing to __consumer_offsets failed");
                let _ = write.done.map(|done| done.send(Err(error_code)));
                continue;
            }
        };
        let Some(done) = write.done else { continue };
        if coordinator.broker.cluster.is_none() {
            let _ = done.send(Ok(()));
            continue;
        }
        glommio::spawn_local(async move {
            let replicated = handle
                .wait_for_high_watermark(end_offset, OFFSETS_COMMIT_TIMEOUT_MS)
                .await
                .map_err(|e| match e {
                    HighWatermarkWaitError::LeadershipMoved(_) => code(ResponseError::NotCoordinator),
                    HighWatermarkWaitError::TimedOut => code(ResponseError::RequestTimedOut),
                });
            let _ = done.send(replicated);
        })
        .detach();
    }
}

/// Closes the write queue: the writer finishes what is queued and returns.
pub fn close_writes(coordinator: &GroupCoordinator) {
    coordinator.writes.sender.borrow_mut().take();
}

/// Appends one batch; Ok is the partition and the offset after the batch, Err the error code
/// for whoever waits (NOT_COORDINATOR when this broker no longer leads the partition).
async fn append(
    coordinator: &GroupCoordinator,
    partition: i32,
    records: &[(Bytes, Option<Bytes>)],
    producer: Option<(i64, i16)>,
) -> Result<(Rc<Partition>, i64), (i16, String)> {
    let unavailable = |e: String| (code(ResponseError::CoordinatorNotAvailable), e);
    let now = now_ms();
    let batch = match producer {
        None => offsets_topic::encode_batch(records, now),
        Some(producer) => offsets_topic::encode_transactional_batch(records, now, producer),
    }
    .map_err(unavailable)?;
    let handle = coordinator.partitions.serving(CONSUMER_OFFSETS_TOPIC, partition).await.map_err(|e| match e {
        PartitionError::NotLeaderOrFollower => (code(ResponseError::NotCoordinator), format!("{e:?}")),
        e => unavailable(format!("{e:?}")),
    })?;
    let appended = handle.append(&batch, AppendOrigin::Coordinator).await.map_err(|e| match e {
        AppendError::Partition(PartitionError::NotLeaderOrFollower) => (code(ResponseError::NotCoordinator), e.to_string()),
        e => unavailable(e.to_string()),
    })?;
    Ok((handle, appended.end_offset))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(partition: i32, done: Option<oneshot::Sender<Result<(), i16>>>) -> OffsetsWrite {
        OffsetsWrite { partition, records: Vec::new(), done, producer: None }
    }

    #[test]
    fn bounded_in_order_and_waiters_go_first() {
        glommio::LocalExecutor::default().run(async {
            let queue = Rc::new(OffsetsQueue::new());
            // Capacity plus the sender's own slot, then full.
            let capacity = QUEUE_CAPACITY as i32 + 1;
            for partition in 0..capacity {
                assert!(queue.push_now(write(partition, None)).is_ok());
            }
            assert!(matches!(queue.push_now(write(-1, None)), Err((_, true))));

            // A writer that waits for room holds the turn: nothing made later slips past it.
            let waiting = glommio::spawn_local({
                let queue = queue.clone();
                async move { queue.push([write(capacity, None), write(capacity + 1, None)]).await }
            });
            while queue.turn.available() > 0 {
                glommio::timer::sleep(std::time::Duration::from_millis(1)).await;
            }
            let mut receiver = queue.receiver.borrow_mut().take().unwrap();
            let mut received = vec![receiver.next().await.unwrap().partition];
            // There is room now, but the waiting writer has not taken it yet: it goes first.
            assert!(matches!(queue.push_now(write(-2, None)), Err((_, true))));
            while received.len() < capacity as usize + 2 {
                received.push(receiver.next().await.unwrap().partition);
            }
            waiting.await;
            assert_eq!(received, (0..capacity + 2).collect::<Vec<_>>());

            // Closed: a waiting writer is answered NOT_COORDINATOR.
            queue.sender.borrow_mut().take();
            let (done, answer) = oneshot::channel();
            queue.push([write(0, Some(done))]).await;
            assert_eq!(answer.await.unwrap(), Err(code(ResponseError::NotCoordinator)));
            assert!(matches!(queue.push_now(write(0, None)), Err((_, false))));
        });
    }
}
