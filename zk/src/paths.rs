//! Kafka's ZooKeeper layout (as of Kafka 2.8, the last with ZooKeeper mode), so operators can
//! inspect a cluster of ours with zkCli and Kafka's own tools' expectations hold. The JSON shapes
//! are Kafka's: `BrokerIdZNode` v5, `ControllerZNode` v1, `ClusterIdZNode` v1.

use zookeeper_client::{Acls, CreateMode, CreateOptions};

pub const BROKER_IDS: &str = "/brokers/ids";
pub const BROKER_TOPICS: &str = "/brokers/topics";
pub const BROKER_SEQUENCE_ID: &str = "/brokers/seqid";
pub const CONTROLLER: &str = "/controller";
pub const CONTROLLER_EPOCH: &str = "/controller_epoch";
pub const CLUSTER_ID: &str = "/cluster/id";
/// A child per topic an admin asked to delete; the controller deletes the topic, then the child.
pub const DELETE_TOPICS: &str = "/admin/delete_topics";

/// The persistent paths Kafka creates at start (`KafkaZkClient.createTopLevelPaths`).
pub const PERSISTENT_PATHS: &[&str] = &[
    "/consumers",
    DELETE_TOPICS,
    BROKER_IDS,
    BROKER_TOPICS,
    "/config/changes",
    "/config/topics",
    "/config/clients",
    "/config/users",
    "/config/brokers",
    "/config/ips",
    "/isr_change_notification",
    "/latest_producer_id_block",
    "/log_dir_event_notification",
];

/// Kafka's `reserved.broker.max.id` default: generated ids start above it.
pub const RESERVED_BROKER_MAX_ID: i32 = 1000;

pub fn topic_path(topic: &str) -> String {
    format!("{BROKER_TOPICS}/{topic}")
}

pub fn partitions_path(topic: &str) -> String {
    format!("{BROKER_TOPICS}/{topic}/partitions")
}

pub fn partition_path(topic: &str, partition: i32) -> String {
    format!("{BROKER_TOPICS}/{topic}/partitions/{partition}")
}

pub fn partition_state_path(topic: &str, partition: i32) -> String {
    format!("{BROKER_TOPICS}/{topic}/partitions/{partition}/state")
}

pub fn delete_topic_path(topic: &str) -> String {
    format!("{DELETE_TOPICS}/{topic}")
}

pub fn topic_config_path(topic: &str) -> String {
    format!("/config/topics/{topic}")
}

/// `/brokers/topics/<topic>` (TopicZNode version 3): the replica assignment and the topic id.
pub fn topic_json(topic_id: &[u8; 16], replicas: &[Vec<i32>]) -> String {
    let partitions: serde_json::Map<String, serde_json::Value> =
        replicas.iter().enumerate().map(|(p, r)| (p.to_string(), serde_json::json!(r))).collect();
    serde_json::json!({
        "version": 3,
        "topic_id": base64_url(topic_id),
        "partitions": partitions,
        "adding_replicas": {},
        "removing_replicas": {},
    })
    .to_string()
}

/// The assignment (replicas by partition) and topic id of a TopicZNode.
pub fn parse_topic_json(data: &[u8]) -> Option<([u8; 16], Vec<Vec<i32>>)> {
    let value: serde_json::Value = serde_json::from_slice(data).ok()?;
    let topic_id = value.get("topic_id").and_then(|v| v.as_str()).and_then(base64_url_decode).unwrap_or([0; 16]);
    let partitions = value.get("partitions")?.as_object()?;
    let mut replicas = vec![Vec::new(); partitions.len()];
    for (partition, list) in partitions {
        let index: usize = partition.parse().ok()?;
        let slot = replicas.get_mut(index)?;
        *slot = list.as_array()?.iter().filter_map(|b| b.as_i64().map(|b| b as i32)).collect();
    }
    Some((topic_id, replicas))
}

/// `/brokers/topics/<topic>/partitions/<p>/state`.
pub fn partition_state_json(leader: i32, leader_epoch: i32, isr: &[i32], controller_epoch: i32) -> String {
    serde_json::json!({
        "controller_epoch": controller_epoch,
        "leader": leader,
        "version": 1,
        "leader_epoch": leader_epoch,
        "isr": isr,
    })
    .to_string()
}

/// (leader, leader_epoch, isr, controller_epoch)
pub fn parse_partition_state_json(data: &[u8]) -> Option<(i32, i32, Vec<i32>, i32)> {
    let value: serde_json::Value = serde_json::from_slice(data).ok()?;
    let number = |key: &str| value.get(key).and_then(|v| v.as_i64()).map(|v| v as i32);
    let isr = value.get("isr")?.as_array()?.iter().filter_map(|b| b.as_i64().map(|b| b as i32)).collect();
    Some((number("leader")?, number("leader_epoch")?, isr, number("controller_epoch").unwrap_or(0)))
}

/// `/config/topics/<topic>` (version 1): the topic's config overrides.
pub fn topic_config_json(config: &std::collections::BTreeMap<String, String>) -> String {
    serde_json::json!({ "version": 1, "config": config }).to_string()
}

pub fn parse_topic_config_json(data: &[u8]) -> std::collections::BTreeMap<String, String> {
    let value: serde_json::Value = serde_json::from_slice(data).unwrap_or_default();
    value
        .get("config")
        .and_then(|c| c.as_object())
        .map(|c| c.iter().filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string()))).collect())
        .unwrap_or_default()
}

/// The broker's endpoints (one per listener, each with its security protocol from the znode's
/// `listener_security_protocol_map`) and rack from its BrokerIdZNode (v4+; Kafka's
/// `BrokerIdZNode.decode`). Older registrations without `endpoints` give their PLAINTEXT host and port.
pub fn parse_broker_json(data: &[u8]) -> Option<(Vec<crate::ListenerEndpoint>, Option<String>)> {
    let value: serde_json::Value = serde_json::from_slice(data).ok()?;
    let rack = value.get("rack").and_then(|r| r.as_str()).map(str::to_string);
    let protocols = value.get("listener_security_protocol_map").and_then(|m| m.as_object());
    let mut endpoints = Vec::new();
    match value.get("endpoints").and_then(|e| e.as_array()) {
        Some(list) => {
            for entry in list.iter().filter_map(|e| e.as_str()) {
                let (listener, address) = entry.split_once("://")?;
                let (host, port) = address.rsplit_once(':')?;
                let protocol = protocols.and_then(|m| m.get(listener)).and_then(|p| p.as_str()).unwrap_or(listener);
                endpoints.push(crate::ListenerEndpoint {
                    listener: listener.to_string(),
                    protocol: protocol.to_string(),
                    host: host.trim_matches(['[', ']']).to_string(),
                    port: port.parse().ok()?,
                });
            }
        }
        None => endpoints.push(crate::ListenerEndpoint {
            listener: "PLAINTEXT".into(),
            protocol: "PLAINTEXT".into(),
            host: value.get("host")?.as_str()?.to_string(),
            port: value.get("port")?.as_u64()? as u16,
        }),
    }
    Some((endpoints, rack))
}

const BASE64_URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// Kafka writes Uuids as URL-safe base64 without padding (22 characters). Hand-written: two small
/// functions do not earn a dependency.
pub fn base64_url(bytes: &[u8; 16]) -> String {
    let mut out = String::with_capacity(22);
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, &b)| n | (b as u32) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(BASE64_URL[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

pub fn base64_url_decode(text: &str) -> Option<[u8; 16]> {
    let mut bits = 0u32;
    let mut count = 0;
    let mut out = Vec::with_capacity(16);
    for c in text.bytes() {
        let value = BASE64_URL.iter().position(|&x| x == c)? as u32;
        bits = bits << 6 | value;
        count += 6;
        if count >= 8 {
            count -= 8;
            out.push((bits >> count) as u8);
            bits &= (1 << count) - 1;
        }
    }
    out.try_into().ok()
}

pub fn broker_path(broker_id: i32) -> String {
    format!("{BROKER_IDS}/{broker_id}")
}

/// `/brokers/ids/<id>`: the broker's endpoints (BrokerIdZNode version 5): every listener in
/// `endpoints` with its protocol in `listener_security_protocol_map`; the legacy `host` and `port`
/// are those of a PLAINTEXT listener, null and -1 without one, as Kafka writes them.
pub fn broker_registration_json(endpoints: &[crate::ListenerEndpoint], rack: Option<&str>, timestamp_ms: i64) -> String {
    let plaintext = endpoints.iter().find(|e| e.protocol == "PLAINTEXT");
    let address = |e: &crate::ListenerEndpoint| {
        if e.host.contains(':') {
            format!("{}://[{}]:{}", e.listener, e.host, e.port)
        } else {
            format!("{}://{}:{}", e.listener, e.host, e.port)
        }
    };
    let protocols: serde_json::Map<String, serde_json::Value> =
        endpoints.iter().map(|e| (e.listener.clone(), serde_json::Value::String(e.protocol.clone()))).collect();
    let mut value = serde_json::json!({
        "features": {},
        "listener_security_protocol_map": protocols,
        "endpoints": endpoints.iter().map(address).collect::<Vec<_>>(),
        "jmx_port": -1,
        "port": plaintext.map_or(-1, |e| e.port as i32),
        "host": plaintext.map(|e| e.host.clone()),
        "version": 5,
        "timestamp": timestamp_ms.to_string(),
    });
    if let Some(rack) = rack {
        value["rack"] = serde_json::Value::String(rack.to_string());
    }
    value.to_string()
}

/// `/controller` (ControllerZNode version 1).
pub fn controller_json(broker_id: i32, timestamp_ms: i64) -> String {
    format!("{{\"version\":1,\"brokerid\":{broker_id},\"timestamp\":\"{timestamp_ms}\"}}")
}

pub fn parse_controller_json(data: &[u8]) -> Option<i32> {
    let value: serde_json::Value = serde_json::from_slice(data).ok()?;
    value.get("brokerid")?.as_i64().map(|id| id as i32)
}

/// `/cluster/id` (ClusterIdZNode version 1).
pub fn cluster_id_json(cluster_id: &str) -> String {
    format!("{{\"version\":\"1\",\"id\":{}}}", json_string(cluster_id))
}

pub fn parse_cluster_id_json(data: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(data).ok()?;
    value.get("id")?.as_str().map(str::to_string)
}

fn json_string(text: &str) -> String {
    serde_json::Value::String(text.to_string()).to_string()
}

pub(crate) fn persistent() -> CreateOptions<'static> {
    CreateMode::Persistent.with_acls(Acls::anyone_all())
}

pub(crate) fn ephemeral() -> CreateOptions<'static> {
    CreateMode::Ephemeral.with_acls(Acls::anyone_all())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registration_is_kafkas_shape() {
        let endpoint = |listener: &str, protocol: &str, port| crate::ListenerEndpoint {
            listener: listener.into(),
            protocol: protocol.into(),
            host: "127.0.0.1".into(),
            port,
        };
        let endpoints = vec![endpoint("PLAINTEXT", "PLAINTEXT", 9092), endpoint("INTERNAL", "SASL_SSL", 9093)];
        let json = broker_registration_json(&endpoints, None, 42);
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(value["endpoints"][0], "PLAINTEXT://127.0.0.1:9092");
        assert_eq!(value["endpoints"][1], "INTERNAL://127.0.0.1:9093");
        assert_eq!(value["listener_security_protocol_map"]["INTERNAL"], "SASL_SSL");
        assert_eq!(value["version"], 5);
        assert_eq!(value["port"], 9092);
        assert_eq!(value["timestamp"], "42");
        assert_eq!(parse_broker_json(json.as_bytes()), Some((endpoints[..].to_vec(), None)));
        // Without a PLAINTEXT listener Kafka writes host null and port -1.
        let json = broker_registration_json(&[endpoint("SECURE", "SASL_SSL", 9093)], Some("r1"), 1);
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!((value["host"].is_null(), value["port"].as_i64(), value["rack"].as_str()), (true, Some(-1), Some("r1")));
    }

    #[test]
    fn topic_state_and_ids_round_trip() {
        let id = [7u8; 16];
        assert_eq!(base64_url(&id).len(), 22);
        assert_eq!(base64_url_decode(&base64_url(&id)), Some(id));
        let json = topic_json(&id, &[vec![1, 2, 3], vec![2, 3, 1]]);
        assert_eq!(parse_topic_json(json.as_bytes()), Some((id, vec![vec![1, 2, 3], vec![2, 3, 1]])));
        let state = partition_state_json(2, 5, &[2, 3], 9);
        assert_eq!(parse_partition_state_json(state.as_bytes()), Some((2, 5, vec![2, 3], 9)));
    }

    #[test]
    fn controller_and_cluster_id_round_trip() {
        assert_eq!(parse_controller_json(controller_json(7, 1).as_bytes()), Some(7));
        assert_eq!(parse_cluster_id_json(cluster_id_json("abc").as_bytes()).as_deref(), Some("abc"));
    }
}
