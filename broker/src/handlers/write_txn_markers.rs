//! WriteTxnMarkers (v1): a transaction coordinator on another broker asks this partition leader
//! to write COMMIT/ABORT markers. Each partition's marker goes to its owning shard and through
//! the partition's one door (`txn_router::write_marker_here`, as the local coordinator does).
//! (Kafka restricts it to brokers by ACL; authorisation comes with the rest of security.)

use std::rc::Rc;

use kafka_protocol::messages::write_txn_markers_response::{
    WritableTxnMarkerPartitionResult, WritableTxnMarkerResult, WritableTxnMarkerTopicResult,
};
use kafka_protocol::messages::{WriteTxnMarkersRequest, WriteTxnMarkersResponse};

use crate::partition::TxnMarker;
use crate::shard_context::Shard;
use crate::security::acl::model::Operation;
use crate::security::session::Session;
use crate::txn_router::write_marker_here;

pub async fn handle(shard: &Rc<Shard>, request: WriteTxnMarkersRequest, session: &Session) -> WriteTxnMarkersResponse {
    // Kafka: from brokers only, CLUSTER_ACTION (each partition CLUSTER_AUTHORIZATION_FAILED).
    let denied = !session.authorize_cluster(Operation::ClusterAction);
    // Every partition of every marker at once, as Kafka appends them all and then waits: each
    // waits for its ISR, and a coordinator batches many transactions' markers into one request.
    let writes = request.markers.iter().flat_map(|marker| {
        let txn_marker = TxnMarker {
            producer_id: marker.producer_id.0,
            producer_epoch: marker.producer_epoch,
            coordinator_epoch: marker.coordinator_epoch,
            commit: marker.transaction_result,
        };
        marker.topics.iter().flat_map(move |topic| {
            topic.partition_indexes.iter().map(move |&index| {
                let name = topic.name.0.to_string();
                async move {
                    if denied {
                        return kafka_protocol::ResponseError::ClusterAuthorizationFailed.code();
                    }
                    let owner = shard.owner_of(&name, index);
                    shard.router.call(owner, move |owner| async move { write_marker_here(&owner, &name, index, txn_marker).await }).await
                }
            })
        })
    });
    let mut codes = futures_util::future::join_all(writes).await.into_iter();
    let mut results = Vec::with_capacity(request.markers.len());
    for marker in request.markers {
        let mut topics = Vec::with_capacity(marker.topics.len());
        for topic in marker.topics {
            let partitions = topic
                .partition_indexes
                .iter()
                .map(|&index| {
                    let error_code = codes.next().expect("one code per partition, in request order");
                    WritableTxnMarkerPartitionResult::default().with_partition_index(index).with_error_code(error_code)
                })
                .collect();
            topics.push(WritableTxnMarkerTopicResult::default().with_name(topic.name).with_partitions(partitions));
        }
        results.push(WritableTxnMarkerResult::default().with_producer_id(marker.producer_id).with_topics(topics));
    }
    WriteTxnMarkersResponse::default().with_markers(results)
}
