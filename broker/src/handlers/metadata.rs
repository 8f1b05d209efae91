//! Metadata. Standalone: this broker, and for each topic its partitions, all led by this broker.
//! Cluster mode: the live brokers, the controller and every partition's leader, replicas and ISR
//! from the ZooKeeper snapshot. Unknown topics are created when `auto.create.topics.enable` and
//! the request allow it, as Kafka does.

use std::rc::Rc;

use kafka_protocol::messages::metadata_response::{MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse, TopicName};
use kafka_protocol::ResponseError;

use super::str_bytes;
use crate::security::acl::model::{Operation, ResourceType};
use crate::security::session::Session;
use crate::security::Listener;
use crate::shard_context::Shard;
use crate::topic_admin::{create_topic_here, create_topic_in_cluster};
use crate::topics::{validate_topic_name, TopicInfo};

/// `listener`: the one the client connected to; standalone, its advertised address is this
/// broker's, as Kafka answers each listener's own endpoints.
pub async fn handle(shard: &Rc<Shard>, request: MetadataRequest, version: i16, listener: &Listener, session: &Session) -> MetadataResponse {
    let listing_all = request.topics.is_none() || (version == 0 && request.topics.as_ref().is_some_and(Vec::is_empty));
    let (include_topic_operations, include_cluster_operations) =
        (request.include_topic_authorized_operations, request.include_cluster_authorized_operations);
    let mut response = if shard.broker.cluster.is_some() {
        handle_in_cluster(shard, request, version, listener, session).await
    } else {
        handle_here(shard, request, version, listener, session).await
    };
    // Kafka's KafkaApis.handleTopicMetadataRequest: a listing shows only the topics the principal
    // may describe; a topic asked for by name and not describable is TOPIC_AUTHORIZATION_FAILED.
    let mut topics = std::mem::take(&mut response.topics);
    if listing_all {
        topics.retain(|t| t.name.as_ref().is_none_or(|name| session.authorize(Operation::Describe, ResourceType::Topic, name)));
    }
    for topic in &mut topics {
        let Some(name) = topic.name.clone() else { continue };
        if !session.authorize(Operation::Describe, ResourceType::Topic, &name) {
            *topic = MetadataResponseTopic::default().with_name(Some(name)).with_error_code(ResponseError::TopicAuthorizationFailed.code());
        } else if include_topic_operations && topic.error_code == 0 {
            topic.topic_authorized_operations = session.authorized_operations(ResourceType::Topic, &name);
        }
    }
    response.topics = topics;
    if include_cluster_operations {
        response.cluster_authorized_operations = session.authorized_operations(ResourceType::Cluster, crate::security::acl::model::CLUSTER_NAME);
    }
    response
}

/// Auto-creation needs DESCRIBE on the topic and CREATE on the cluster or on the topic, as Kafka.
fn may_auto_create(session: &Session, name: &str) -> bool {
    session.authorize(Operation::Describe, ResourceType::Topic, name)
        && (session.authorize_cluster(Operation::Create) || session.authorize(Operation::Create, ResourceType::Topic, name))
}

async fn handle_here(shard: &Rc<Shard>, request: MetadataRequest, version: i16, listener: &Listener, session: &Session) -> MetadataResponse {
    let config = &shard.broker.config;
    let broker_id = BrokerId(config.broker_id);
    // v0: an empty list means every topic; v1+: null means every topic.
    let (requested, unknown_ids) = requested_topics(shard, request.topics, version);
    let allow_auto_create = config.auto_create_topics_enable && (version < 4 || request.allow_auto_topic_creation);
    let mut topics = Vec::new();
    match requested {
        None => {
            let all: Vec<TopicInfo> = shard.broker.topics.read().unwrap().all().cloned().collect();
            topics.extend(all.iter().map(|info| topic_metadata(info, broker_id)));
        }
        Some(names) => {
            for name in names {
                let existing = shard.broker.topics.read().unwrap().get(&name).cloned();
                let found = match existing {
                    Some(info) => Ok(info),
                    None if validate_topic_name(&name).is_err() => Err(ResponseError::InvalidTopicException),
                    None if allow_auto_create && !may_auto_create(session, &name) => Err(ResponseError::TopicAuthorizationFailed),
                    None if allow_auto_create => {
                        match create_topic_here(shard, &name, config.num_partitions, Default::default()).await {
                            Ok(info) => Ok(info),
                            Err((error, message)) => {
                                tracing::warn!(topic = name, %message, "auto-creating a topic failed");
                                Err(if error == ResponseError::TopicAlreadyExists.code() {
                                    ResponseError::LeaderNotAvailable
                                } else {
                                    ResponseError::UnknownTopicOrPartition
                                })
                            }
                        }
                    }
                    None => Err(ResponseError::UnknownTopicOrPartition),
                };
                topics.push(match found {
                    Ok(info) => topic_metadata(&info, broker_id),
                    Err(error) => MetadataResponseTopic::default()
                        .with_name(Some(TopicName(str_bytes(&name))))
                        .with_error_code(error.code()),
                });
            }
        }
    }
    MetadataResponse::default()
        .with_brokers(vec![MetadataResponseBroker::default()
            .with_node_id(broker_id)
            .with_host(str_bytes(&listener.advertised_host))
            .with_port(listener.advertised_port as i32)
            .with_rack(config.broker_rack.as_deref().map(str_bytes))])
        .with_cluster_id(Some(str_bytes(&shard.broker.cluster_id)))
        .with_controller_id(broker_id)
        .with_topics(topics.into_iter().chain(unknown_ids).collect())
}

/// The topics a request names (None: every topic). Metadata v10+ may name a topic by its id (the
/// Java client then sends an empty name): a non-zero id wins and is resolved to the name here;
/// an unknown id gets UNKNOWN_TOPIC_ID, as Kafka.
fn requested_topics(shard: &Shard, topics: Option<Vec<MetadataRequestTopic>>, version: i16) -> (Option<Vec<String>>, Vec<MetadataResponseTopic>) {
    let topics = match topics {
        None => return (None, Vec::new()),
        Some(topics) if version == 0 && topics.is_empty() => return (None, Vec::new()),
        Some(topics) => topics,
    };
    let mut names = Vec::with_capacity(topics.len());
    let mut unknown = Vec::new();
    for topic in topics {
        if topic.topic_id.is_nil() {
            names.extend(topic.name.map(|name| name.0.to_string()));
            continue;
        }
        let id = *topic.topic_id.as_bytes();
        let found = match &shard.broker.cluster {
            Some(cluster) => cluster.view.snapshot().topics.iter().find(|(_, t)| t.topic_id == id).map(|(name, _)| name.clone()),
            None => shard.broker.topics.read().unwrap().all().find(|t| t.topic_id == id).map(|t| t.name.clone()),
        };
        match found {
            Some(name) => names.push(name),
            None => unknown.push(
                MetadataResponseTopic::default().with_topic_id(topic.topic_id).with_error_code(ResponseError::UnknownTopicId.code()),
            ),
        }
    }
    (Some(names), unknown)
}

/// Cluster mode: every live broker, the controller, and each topic's partitions as ZooKeeper says
/// (leader, leader epoch, replicas, ISR, offline replicas). Brokers' addresses are those of the
/// listener the client connected on; a broker without that listener is left out, as Kafka does.
async fn handle_in_cluster(shard: &Rc<Shard>, request: MetadataRequest, version: i16, listener: &Listener, session: &Session) -> MetadataResponse {
    let config = &shard.broker.config;
    let cluster = shard.broker.cluster.as_ref().expect("cluster mode");
    let (requested, unknown_ids) = requested_topics(shard, request.topics, version);
    let allow_auto_create = config.auto_create_topics_enable && (version < 4 || request.allow_auto_topic_creation);
    let mut names = requested.clone().unwrap_or_else(|| cluster.view.snapshot().topics.keys().cloned().collect());
    let mut errors = std::collections::BTreeMap::new();
    if requested.is_some() {
        for name in &names {
            if cluster.view.snapshot().topics.contains_key(name) {
                continue;
            }
            let error = if validate_topic_name(name).is_err() {
                ResponseError::InvalidTopicException
            } else if allow_auto_create && !may_auto_create(session, name) {
                ResponseError::TopicAuthorizationFailed
            } else if allow_auto_create {
                let factor = config.default_replication_factor;
                match create_topic_in_cluster(shard, name, config.num_partitions, factor, None, Default::default(), 2_000).await {
                    Ok(_) => continue,
                    Err((code, _)) if code == ResponseError::TopicAlreadyExists.code() => continue,
                    Err((_, message)) => {
                        tracing::warn!(topic = name, %message, "auto-creating a topic failed");
                        ResponseError::LeaderNotAvailable
                    }
                }
            } else {
                ResponseError::UnknownTopicOrPartition
            };
            errors.insert(name.clone(), error);
        }
    }
    names.dedup();
    let snapshot = cluster.view.snapshot();
    let topics: Vec<MetadataResponseTopic> = names
        .iter()
        .map(|name| match (errors.get(name), snapshot.topics.get(name)) {
            (None, Some(state)) => cluster_topic_metadata(name, state, &snapshot),
            (error, _) => MetadataResponseTopic::default()
                .with_name(Some(TopicName(str_bytes(name))))
                .with_error_code(error.copied().unwrap_or(ResponseError::LeaderNotAvailable).code()),
        })
        .collect();
    let brokers = snapshot
        .brokers
        .values()
        .filter_map(|b| {
            let endpoint = b.endpoint(&listener.name)?;
            Some(
                MetadataResponseBroker::default()
                    .with_node_id(BrokerId(b.id))
                    .with_host(str_bytes(&endpoint.host))
                    .with_port(endpoint.port as i32)
                    .with_rack(b.rack.as_deref().map(str_bytes)),
            )
        })
        .collect();
    MetadataResponse::default()
        .with_brokers(brokers)
        .with_cluster_id(Some(str_bytes(&shard.broker.cluster_id)))
        .with_controller_id(BrokerId(cluster.view.controller_id()))
        .with_topics(topics.into_iter().chain(unknown_ids).collect())
}

fn cluster_topic_metadata(name: &str, state: &zk::TopicState, snapshot: &zk::ClusterSnapshot) -> MetadataResponseTopic {
    let ids = |list: &[i32]| list.iter().map(|&b| BrokerId(b)).collect::<Vec<_>>();
    let partitions = state
        .replicas
        .iter()
        .enumerate()
        .map(|(index, replicas)| {
            let offline: Vec<i32> = replicas.iter().copied().filter(|&b| !snapshot.replica_online(b, name, index as i32)).collect();
            let partition = MetadataResponsePartition::default()
                .with_partition_index(index as i32)
                .with_replica_nodes(ids(replicas))
                .with_offline_replicas(ids(&offline));
            match state.states.get(index).cloned().flatten() {
                Some(s) if s.leader >= 0 => partition
                    .with_leader_id(BrokerId(s.leader))
                    .with_leader_epoch(s.leader_epoch)
                    .with_isr_nodes(ids(&s.isr)),
                other => partition
                    .with_error_code(ResponseError::LeaderNotAvailable.code())
                    .with_leader_id(BrokerId(-1))
                    .with_leader_epoch(other.as_ref().map_or(-1, |s| s.leader_epoch))
                    .with_isr_nodes(other.map(|s| ids(&s.isr)).unwrap_or_default()),
            }
        })
        .collect();
    MetadataResponseTopic::default()
        .with_name(Some(TopicName(str_bytes(name))))
        .with_topic_id(uuid::Uuid::from_bytes(state.topic_id))
        .with_partitions(partitions)
}

fn topic_metadata(info: &TopicInfo, broker_id: BrokerId) -> MetadataResponseTopic {
    let partitions = (0..info.partitions)
        .map(|index| {
            if storage::log_manager::partition_offline(&info.name, index) {
                // Its log dir failed: no leader, as Kafka's controller leaves a partition whose
                // only replica is offline.
                return MetadataResponsePartition::default()
                    .with_partition_index(index)
                    .with_error_code(ResponseError::LeaderNotAvailable.code())
                    .with_leader_id(BrokerId(-1))
                    .with_leader_epoch(0)
                    .with_replica_nodes(vec![broker_id])
                    .with_offline_replicas(vec![broker_id]);
            }
            MetadataResponsePartition::default()
                .with_partition_index(index)
                .with_leader_id(broker_id)
                .with_leader_epoch(0)
                .with_replica_nodes(vec![broker_id])
                .with_isr_nodes(vec![broker_id])
        })
        .collect();
    MetadataResponseTopic::default()
        .with_name(Some(TopicName(str_bytes(&info.name))))
        .with_topic_id(uuid::Uuid::from_bytes(info.topic_id))
        .with_is_internal(info.is_internal())
        .with_partitions(partitions)
}
