//! librdkafka clients as every run configures them, and the topics a run creates and deletes.

use std::time::{Duration, Instant};

use futures_lite::future::block_on;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::ClientConfig;

use crate::target::Target;
use crate::workload::Workload;

/// How long topic creation may take to show in metadata (a cluster elects leaders first).
const TOPIC_READY_TIMEOUT: Duration = Duration::from_secs(30);

/// For the admin and metadata clients.
pub fn base_config(target: &Target, extra: &[(String, String)]) -> ClientConfig {
    client_config(target, "bench", &[], extra)
}

/// `transactional_id`: a transactional producer's own id (one per producer: a second producer
/// with the same id would fence the first).
pub fn producer_config(target: &Target, workload: &Workload, transactional_id: Option<&str>, extra: &[(String, String)]) -> ClientConfig {
    let mut settings = vec![
        ("acks", workload.acks.clone()),
        ("compression.type", workload.compression.clone()),
        ("linger.ms", workload.linger_ms.to_string()),
        ("batch.size", workload.batch_size_bytes.to_string()),
    ];
    // Only set when asked, so the other workloads' clients keep exactly their old settings.
    if workload.idempotent {
        settings.push(("enable.idempotence", "true".to_string()));
    }
    if let Some(id) = transactional_id {
        settings.push(("transactional.id", id.to_string()));
    }
    client_config(target, "bench-producer", &settings, extra)
}

pub fn consumer_config(target: &Target, extra: &[(String, String)]) -> ClientConfig {
    let settings = [
        // Partitions are assigned by hand; the group id is only what librdkafka requires.
        ("group.id", "bench".to_string()),
        ("enable.auto.commit", "false".to_string()),
        ("enable.auto.offset.store", "false".to_string()),
        ("enable.partition.eof", "false".to_string()),
        // The bench reads every partition from its beginning: when retention deletes records
        // under a reader (OFFSET_OUT_OF_RANGE below the log start), go on from the new log start
        // as a Kafka consumer set to `earliest` does. librdkafka's default (`latest`) jumped to
        // the end instead, and a read-back waiting for the old high watermark stalled.
        ("auto.offset.reset", "earliest".to_string()),
    ];
    client_config(target, "bench-consumer", &settings, extra)
}

/// The target, the client's own settings, then the user's `--client-config` last so it wins.
fn client_config(target: &Target, client_id: &str, settings: &[(&str, String)], extra: &[(String, String)]) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", &target.bootstrap).set("client.id", client_id);
    for (key, value) in settings {
        config.set(*key, value);
    }
    for (key, value) in extra {
        config.set(key, value);
    }
    config
}

/// Creates `names` with the workload's partitions and replication factor, and `topic_config`
/// (`--topic-config`: e.g. segment.bytes and retention.bytes, so a soak's topic rolls and
/// deletes segments as it runs) as the topics' own settings.
pub fn create_topics(
    target: &Target,
    workload: &Workload,
    names: &[String],
    topic_config: &[(String, String)],
    extra: &[(String, String)],
) -> Result<(), String> {
    let admin: AdminClient<DefaultClientContext> =
        base_config(target, extra).create().map_err(|error| format!("admin client: {error}"))?;
    let new_topics: Vec<NewTopic> = names
        .iter()
        .map(|name| {
            let topic = NewTopic::new(name, workload.partitions_per_topic, TopicReplication::Fixed(workload.replication_factor));
            topic_config.iter().fold(topic, |topic, (key, value)| topic.set(key, value))
        })
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = block_on(admin.create_topics(&new_topics, &options)).map_err(|error| format!("create topics: {error}"))?;
    for result in results {
        result.map_err(|(name, code)| format!("create topic {name}: {code}"))?;
    }
    // Wait until every partition has a leader in the metadata, as a cluster needs a moment.
    let consumer: BaseConsumer = base_config(target, extra).create().map_err(|error| format!("metadata client: {error}"))?;
    let deadline = Instant::now() + TOPIC_READY_TIMEOUT;
    for name in names {
        loop {
            let metadata = consumer.fetch_metadata(Some(name), Duration::from_secs(5));
            let ready = metadata.as_ref().is_ok_and(|metadata| {
                metadata.topics().iter().any(|topic| {
                    topic.error().is_none()
                        && topic.partitions().len() == workload.partitions_per_topic as usize
                        && topic.partitions().iter().all(|partition| partition.leader() >= 0)
                })
            });
            if ready {
                break;
            }
            if Instant::now() > deadline {
                return Err(format!("topic {name} has no leaders after {TOPIC_READY_TIMEOUT:?}"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    Ok(())
}

pub fn delete_topics(target: &Target, names: &[String], extra: &[(String, String)]) -> Result<(), String> {
    if names.is_empty() {
        return Ok(());
    }
    let admin: AdminClient<DefaultClientContext> =
        base_config(target, extra).create().map_err(|error| format!("admin client: {error}"))?;
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = block_on(admin.delete_topics(&names, &options)).map_err(|error| format!("delete topics: {error}"))?;
    for result in results {
        result.map_err(|(name, code)| format!("delete topic {name}: {code}"))?;
    }
    Ok(())
}
