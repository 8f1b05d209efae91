//! Produce: each partition's record bytes go to the owning shard (as `Bytes`, no copy across
//! shards), which appends through the partition's one door (`Partition::append`).

use std::rc::Rc;

use bytes::Bytes;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};
use kafka_protocol::ResponseError;

use super::{partition_error_code, str_bytes};
use crate::partition::{AppendError, AppendOrigin, HighWatermarkWaitError};
use crate::security::acl::model::{Operation, ResourceType};
use crate::security::session::Session;
use crate::shard_context::Shard;
use crate::topics::CONSUMER_OFFSETS_TOPIC;

struct Appended {
    error_code: i16,
    error_message: Option<String>,
    base_offset: i64,
    log_append_time_ms: i64,
    log_start_offset: i64,
    /// acks=all in cluster mode: the offset the high watermark must pass before the answer.
    isr_wait_end_offset: Option<i64>,
}

impl Appended {
    fn error(error_code: i16, message: impl Into<String>) -> Appended {
        Appended { error_code, error_message: Some(message.into()), base_offset: -1, log_append_time_ms: -1, log_start_offset: -1, isr_wait_end_offset: None }
    }
}

/// Returns None for acks=0 (no response at all).
pub async fn handle(shard: &Rc<Shard>, request: ProduceRequest, version: i16, session: &Session) -> Option<ProduceResponse> {
    let acks = request.acks;
    // Kafka 3.9 (KafkaApis.handleProduceRequest): a request is transactional when the first
    // batch of any of its partitions is (RequestUtils.hasTransactionalRecords), not when its
    // `transactional_id` field is set. Such a request needs WRITE on that transactional id, and
    // one without the field is refused the same way, with or without an authorizer; the whole
    // request is answered TRANSACTIONAL_ID_AUTHORIZATION_FAILED, before any topic is checked. A
    // request carrying the field with only non-transactional batches is not checked against it.
    let transactional = request
        .topic_data
        .iter()
        .flat_map(|t| &t.partition_data)
        .any(|p| p.records.as_deref().and_then(first_batch).is_some_and(|h| h.is_transactional()));
    let transactional_id_denied = transactional
        && !request.transactional_id.as_ref().is_some_and(|id| session.authorize(Operation::Write, ResourceType::TransactionalId, id));
    let mut responses = Vec::new();
    // acks=all: every partition is appended first, then the ISR is awaited for all of them at
    // once, as Kafka's DelayedProduce (issue 21: waiting per partition before appending the next
    // made a request to 1,000 partitions take a replication round trip per partition).
    // (topic's place, partition's place, partition, end offset)
    let mut isr_waits: Vec<(usize, usize, String, i32, i64)> = Vec::new();
    for topic in request.topic_data {
        let name = topic.name.0.to_string();
        let topic_denied = !session.authorize(Operation::Write, ResourceType::Topic, &name);
        let mut partition_responses = Vec::new();
        for partition in topic.partition_data {
            let appended = if transactional_id_denied {
                Appended::error(ResponseError::TransactionalIdAuthorizationFailed.code(), "Transactional Id authorization failed.")
            } else if topic_denied {
                Appended::error(ResponseError::TopicAuthorizationFailed.code(), "Topic authorization failed.")
            } else if !matches!(acks, -1 | 0 | 1) {
                Appended::error(ResponseError::InvalidRequiredAcks.code(), format!("acks={acks} is not -1, 0 or 1"))
            } else if let Some(reason) = shard.broker.not_enough_replicas(&name, partition.index, acks) {
                Appended::error(ResponseError::NotEnoughReplicas.code(), reason)
            } else if name == CONSUMER_OFFSETS_TOPIC {
                // Only the group coordinator writes it, in its own record format.
                Appended::error(ResponseError::InvalidTopicException.code(), "Cannot append to internal topic __consumer_offsets")
            } else if name == crate::txn::TRANSACTION_STATE_TOPIC {
                // Only the transaction coordinator writes it.
                Appended::error(ResponseError::InvalidTopicException.code(), "Cannot append to internal topic __transaction_state")
            } else {
                match partition.records {
                    None => Appended::error(ResponseError::CorruptMessage.code(), "no records"),
                    // Message sets v0/v1 (magic byte at 16): only RecordBatch v2 is stored, and
                    // Kafka 4 refuses them the same way.
                    Some(records) if records.len() > 16 && records[16] != storage::batch::MAGIC_V2 as u8 => {
                        Appended::error(ResponseError::UnsupportedForMessageFormat.code(), "only RecordBatch v2 (magic 2) is accepted")
                    }
                    Some(records) => {
                        let owner = shard.owner_of(&name, partition.index);
                        let (topic_name, index) = (name.clone(), partition.index);
                        let transactional_id = request.transactional_id.as_ref().map(|t| t.0.to_string());
                        shard
                            .router
                            .call(owner, move |owner| async move {
                                append(&owner, &topic_name, index, records, acks, transactional_id.as_deref()).await
                            })
                            .await
                    }
                }
            };
            if appended.error_code != 0 {
                tracing::debug!(topic = name, partition = partition.index, code = appended.error_code, message = ?appended.error_message, "produce failed");
            }
            let mut response = PartitionProduceResponse::default()
                .with_index(partition.index)
                .with_error_code(appended.error_code)
                .with_base_offset(appended.base_offset)
                .with_log_append_time_ms(appended.log_append_time_ms)
                .with_log_start_offset(appended.log_start_offset);
            if version >= 8 {
                response = response.with_error_message(appended.error_message.as_deref().map(str_bytes));
            }
            if let Some(end_offset) = appended.isr_wait_end_offset {
                isr_waits.push((responses.len(), partition_responses.len(), name.clone(), partition.index, end_offset));
            }
            partition_responses.push(response);
        }
        responses.push(TopicProduceResponse::default().with_name(topic.name).with_partition_responses(partition_responses));
    }
    let waited = futures_util::future::join_all(isr_waits.iter().map(|(_, _, topic, index, end_offset)| {
        let (owner, topic, index, end_offset, timeout_ms) = (shard.owner_of(topic, *index), topic.clone(), *index, *end_offset, request.timeout_ms);
        shard.router.call(owner, move |owner| async move { wait_for_isr(&owner, &topic, index, end_offset, timeout_ms).await })
    }))
    .await;
    for ((topic_at, partition_at, _, _, _), waited) in isr_waits.into_iter().zip(waited) {
        if let Err(failed) = waited {
            let response = &mut responses[topic_at].partition_responses[partition_at];
            response.error_code = failed.error_code;
            response.base_offset = -1;
            response.log_append_time_ms = -1;
            response.log_start_offset = -1;
            if version >= 8 {
                response.error_message = failed.error_message.as_deref().map(str_bytes);
            }
        }
    }
    if acks == 0 {
        return None;
    }
    Some(ProduceResponse::default().with_responses(responses))
}

/// Runs on the owning shard: the partition's one append door, then (acks=all in cluster mode)
/// the wait for the ISR.
async fn append(shard: &Shard, topic: &str, index: i32, records: Bytes, acks: i16, transactional_id: Option<&str>) -> Appended {
    let partition = match shard.partition(topic, index).await {
        Ok(p) => p,
        Err(e) => return Appended::error(partition_error_code(&e), format!("{e:?}")),
    };
    if let Err(refused) = verify_transaction(shard, &partition, topic, index, &records, transactional_id).await {
        return refused;
    }
    let appended = match partition.append(&records, AppendOrigin::Client).await {
        Ok(appended) => appended,
        Err(e) if crate::partition::is_keyless_refusal(&e) => return Appended::error(ResponseError::InvalidRecord.code(), e.to_string()),
        Err(e) => return Appended::error(append_error_code(&e), e.to_string()),
    };
    let needs_isr = acks == -1 && shard.broker.cluster.is_some() && !appended.duplicate;
    Appended {
        error_code: 0,
        error_message: None,
        base_offset: appended.base_offset,
        log_append_time_ms: appended.log_append_time_ms,
        log_start_offset: appended.log_start_offset,
        isr_wait_end_offset: needs_isr.then_some(appended.end_offset),
    }
}

/// acks=all: answers once every replica in the ISR has the batch; REQUEST_TIMED_OUT after the
/// request's timeout, as Kafka.
async fn wait_for_isr(shard: &Shard, topic: &str, index: i32, end_offset: i64, timeout_ms: i32) -> Result<(), Appended> {
    let partition = shard.partition(topic, index).await.map_err(|e| Appended::error(partition_error_code(&e), "leadership moved before the ISR had the batch"))?;
    match partition.wait_for_high_watermark(end_offset, timeout_ms).await {
        Ok(()) => Ok(()),
        Err(HighWatermarkWaitError::LeadershipMoved(e)) => Err(Appended::error(partition_error_code(&e), "leadership moved before the ISR had the batch")),
        Err(HighWatermarkWaitError::TimedOut) => {
            Err(Appended::error(ResponseError::RequestTimedOut.code(), "the ISR did not have the batch within the request timeout"))
        }
    }
}

/// KIP-890 part 1 (Kafka 3.9, `transaction.partition.verification.enable=true`): the first
/// transactional batch of a transaction on this partition is appended only if the coordinator
/// says the partition was added to the producer's ongoing transaction, so a late or stray
/// batch cannot open a transaction the coordinator will never end (a hanging transaction).
/// Kafka checks the first batch of a request, as here (a request's batches share a producer).
/// Between the answer and the append only this producer's own marker could intervene, and a
/// marker needs the coordinator to have ended the transaction it just confirmed.
async fn verify_transaction(shard: &Shard, partition: &crate::partition::Partition, topic: &str, index: i32, records: &[u8], transactional_id: Option<&str>) -> Result<(), Appended> {
    let Some(header) = first_batch(records) else {
        return Ok(()); // the append refuses it with the reason
    };
    if !header.is_transactional() || !partition.needs_transaction_verification(header.producer_id, header.producer_epoch) {
        return Ok(());
    }
    // A missing id was refused by `handle` already (TRANSACTIONAL_ID_AUTHORIZATION_FAILED); an
    // empty one names no coordinator to ask.
    let Some(transactional_id) = transactional_id.filter(|t| !t.is_empty()) else {
        return Err(Appended::error(ResponseError::InvalidRequest.code(), "a transactional batch needs the request's transactional id"));
    };
    crate::txn_router::verify_partition_in_transaction(shard, transactional_id, header.producer_id, header.producer_epoch, topic, index).await.map_err(|code| {
        tracing::debug!(topic, partition = index, transactional_id, code, "transactional produce refused by the coordinator's verification");
        Appended::error(code, format!("the partition is not in producer {}'s ongoing transaction (verified with its coordinator)", header.producer_id))
    })
}

/// The header of the records' first batch, if they start with a whole RecordBatch v2 header.
/// Kafka reads only the first batch of each partition for the request's flags (a v3+ request
/// holds exactly one). Anything else is not transactional here; the append refuses it.
fn first_batch(records: &[u8]) -> Option<storage::batch::BatchHeader> {
    let header = storage::batch::BatchHeader::parse(records.get(..storage::batch::BATCH_HEADER_SIZE_BYTES)?).ok()?;
    (header.magic == storage::batch::MAGIC_V2).then_some(header)
}

fn append_error_code(error: &AppendError) -> i16 {
    match error {
        AppendError::Partition(e) => partition_error_code(e),
        AppendError::OutOfOrderSequence { .. } => ResponseError::OutOfOrderSequenceNumber.code(),
        AppendError::ProducerFenced { .. } => ResponseError::InvalidProducerEpoch.code(),
        AppendError::CoordinatorFenced { .. } => ResponseError::TransactionCoordinatorFenced.code(),
    }
}

/// The response to Produce v0-v2, hand-encoded (kafka-protocol 0.18 starts at v3): v2 is v3's
/// layout; v1 drops the log append time; v0 also the throttle time.
pub fn encode_pre_v3(response: &ProduceResponse, version: i16, correlation_id: i32) -> super::Outcome {
    use bytes::{BufMut, BytesMut};
    let mut out = BytesMut::new();
    out.put_i32(0); // length, filled in below
    out.put_i32(correlation_id);
    out.put_i32(response.responses.len() as i32);
    for topic in &response.responses {
        out.put_i16(topic.name.len() as i16);
        out.put_slice(topic.name.as_bytes());
        out.put_i32(topic.partition_responses.len() as i32);
        for partition in &topic.partition_responses {
            out.put_i32(partition.index);
            out.put_i16(partition.error_code);
            out.put_i64(partition.base_offset);
            if version >= 2 {
                out.put_i64(partition.log_append_time_ms);
            }
        }
    }
    if version >= 1 {
        out.put_i32(response.throttle_time_ms);
    }
    super::respond_with_length(out)
}
