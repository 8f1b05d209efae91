//! Transaction markers for partitions led by other brokers, batched per destination broker as
//! Kafka's TransactionMarkerChannelManager does: each shard keeps a queue per destination, and at
//! most one WriteTxnMarkers (v1) is in flight to a destination from a shard; it carries every
//! marker queued meanwhile (of different transactions), so under load the requests do not grow
//! with the transactions. One transaction alone goes out at once, as before.
//!
//! A request carries at most one marker per producer id (the response is matched to its markers
//! by producer id, as Kafka's handler answers them); a second marker of the same producer waits
//! for the next request. The queue is bounded: past `MAX_QUEUED_MARKERS` a caller is refused and
//! retries after its back-off (`txn_router::deliver`).

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::rc::Rc;
use std::time::Duration;

use futures_channel::oneshot;
use kafka_protocol::messages::write_txn_markers_request::{WritableTxnMarker, WritableTxnMarkerTopic};
use kafka_protocol::messages::{ApiKey, ProducerId, TopicName, WriteTxnMarkersRequest, WriteTxnMarkersResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::pool::InterBrokerPool;
use crate::partition::TxnMarker;

/// Markers waiting for one destination on one shard; one more is refused.
const MAX_QUEUED_MARKERS: usize = 4096;
/// Markers in one request at most (a request of thousands of partitions stays a few hundred KiB).
const MAX_MARKERS_PER_REQUEST: usize = 512;
/// The leader waits up to 30 s for its ISR per marker (`txn_router::write_marker_here`, Kafka
/// writes markers acks=-1); a little more for connecting and the round trip.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(45);

/// Each partition's error code, in the order the caller gave the partitions; or why the request
/// failed (every partition is then to retry).
type Answer = Result<Vec<i16>, String>;

struct Pending {
    marker: TxnMarker,
    partitions: Vec<(String, i32)>,
    answer: oneshot::Sender<Answer>,
}

#[derive(Default)]
struct Queue {
    pending: RefCell<VecDeque<Pending>>,
    /// A request to this destination is in flight (its sender task drains the queue).
    sending: Cell<bool>,
}

pub struct MarkerChannel {
    pool: Rc<InterBrokerPool>,
    queues: RefCell<HashMap<i32, Rc<Queue>>>,
}

impl MarkerChannel {
    pub fn new(pool: Rc<InterBrokerPool>) -> MarkerChannel {
        MarkerChannel { pool, queues: RefCell::default() }
    }

    /// Writes `marker` to `partitions`, all led by `broker_id`: the error code per partition, in
    /// order.
    pub async fn send(&self, broker_id: i32, marker: TxnMarker, partitions: Vec<(String, i32)>) -> Answer {
        let queue = self.queues.borrow_mut().entry(broker_id).or_default().clone();
        if queue.pending.borrow().len() >= MAX_QUEUED_MARKERS {
            return Err(format!("{MAX_QUEUED_MARKERS} markers already wait for broker {broker_id}"));
        }
        let (answer, answered) = oneshot::channel();
        queue.pending.borrow_mut().push_back(Pending { marker, partitions, answer });
        if !queue.sending.replace(true) {
            glommio::spawn_local(drain(self.pool.clone(), broker_id, queue)).detach();
        }
        answered.await.unwrap_or_else(|_| Err("the marker sender stopped".into()))
    }
}

/// Sends what the queue holds, one request at a time, until it is empty.
async fn drain(pool: Rc<InterBrokerPool>, broker_id: i32, queue: Rc<Queue>) {
    loop {
        let batch = take_batch(&queue);
        if batch.is_empty() {
            queue.sending.set(false);
            return;
        }
        let request = WriteTxnMarkersRequest::default().with_markers(batch.iter().map(|p| writable(&p.marker, &p.partitions)).collect());
        let answer: Result<WriteTxnMarkersResponse, String> = pool.call(broker_id, ApiKey::WriteTxnMarkers, 1, &request, REQUEST_TIMEOUT).await;
        match answer {
            Ok(response) => {
                let mut errors: HashMap<i64, HashMap<(String, i32), i16>> = HashMap::new();
                for result in response.markers {
                    let of_producer = errors.entry(result.producer_id.0).or_default();
                    for topic in result.topics {
                        for p in topic.partitions {
                            of_producer.insert((topic.name.0.to_string(), p.partition_index), p.error_code);
                        }
                    }
                }
                for pending in batch {
                    let of_producer = errors.get(&pending.marker.producer_id);
                    let codes = pending
                        .partitions
                        .iter()
                        .map(|key| of_producer.and_then(|e| e.get(key)).copied().unwrap_or(ResponseError::UnknownServerError.code()))
                        .collect();
                    let _ = pending.answer.send(Ok(codes));
                }
            }
            Err(e) => {
                for pending in batch {
                    let _ = pending.answer.send(Err(e.clone()));
                }
            }
        }
    }
}

/// The next request's markers: in queue order, one per producer id, `MAX_MARKERS_PER_REQUEST`
/// at most; the rest stay queued in order.
fn take_batch(queue: &Queue) -> Vec<Pending> {
    let mut pending = queue.pending.borrow_mut();
    let mut producers = BTreeSet::new();
    let mut batch = Vec::new();
    let mut left = VecDeque::new();
    while let Some(next) = pending.pop_front() {
        // A caller that gave up (its task dropped) is not sent for.
        if next.answer.is_canceled() {
            continue;
        }
        if batch.len() < MAX_MARKERS_PER_REQUEST && producers.insert(next.marker.producer_id) {
            batch.push(next);
        } else {
            left.push_back(next);
        }
    }
    *pending = left;
    batch
}

fn writable(marker: &TxnMarker, partitions: &[(String, i32)]) -> WritableTxnMarker {
    let mut topics: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for (topic, partition) in partitions {
        topics.entry(topic).or_default().push(*partition);
    }
    WritableTxnMarker::default()
        .with_producer_id(ProducerId(marker.producer_id))
        .with_producer_epoch(marker.producer_epoch)
        .with_transaction_result(marker.commit)
        .with_coordinator_epoch(marker.coordinator_epoch)
        .with_topics(
            topics
                .into_iter()
                .map(|(topic, indexes)| WritableTxnMarkerTopic::default().with_name(TopicName(StrBytes::from_string(topic.to_string()))).with_partition_indexes(indexes))
                .collect(),
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(producer_id: i64) -> (Pending, oneshot::Receiver<Answer>) {
        let (answer, answered) = oneshot::channel();
        let marker = TxnMarker { producer_id, producer_epoch: 0, coordinator_epoch: 0, commit: true };
        (Pending { marker, partitions: vec![("t".into(), 0)], answer }, answered)
    }

    #[test]
    fn a_batch_holds_one_marker_per_producer_in_queue_order_and_skips_callers_gone() {
        let queue = Queue::default();
        let mut kept = Vec::new();
        for producer_id in [1, 2, 1, 3, 4] {
            let (p, answered) = pending(producer_id);
            queue.pending.borrow_mut().push_back(p);
            kept.push(answered);
        }
        drop(kept.remove(4)); // producer 4's caller gave up
        let batch: Vec<i64> = take_batch(&queue).iter().map(|p| p.marker.producer_id).collect();
        assert_eq!(batch, [1, 2, 3]);
        let left: Vec<i64> = queue.pending.borrow().iter().map(|p| p.marker.producer_id).collect();
        assert_eq!(left, [1], "the second marker of producer 1 waits for the next request");
    }

    #[test]
    fn a_batch_is_bounded() {
        let queue = Queue::default();
        let mut kept = Vec::new();
        for producer_id in 0..(MAX_MARKERS_PER_REQUEST as i64 + 10) {
            let (p, answered) = pending(producer_id);
            queue.pending.borrow_mut().push_back(p);
            kept.push(answered);
        }
        assert_eq!(take_batch(&queue).len(), MAX_MARKERS_PER_REQUEST);
        assert_eq!(queue.pending.borrow().len(), 10);
    }
}
