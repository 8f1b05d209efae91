//! Kafka's ZooKeeper layout (as of Kafka 2.8, the last with ZooKeeper mode), so operators can
//! inspect a cluster of ours with zkCli and Kafka's own tools' expectations hold. The JSON shapes
//! are Kafka's: `BrokerIdZNode` v5, `ControllerZNode` v1, `ClusterIdZNode` v1.

pub const BROKER_IDS: &str = "/brokers/ids";
pub const BROKER_TOPICS: &str = "/brokers/topics";
pub const BROKER_SEQUENCE_ID: &str = "/brokers/seqid";
pub const CONTROLLER: &str = "/controller";
pub const CONTROLLER_EPOCH: &str = "/controller_epoch";
pub const CLUSTER_ID: &str = "/cluster/id";

/// The persistent paths Kafka creates at start (`KafkaZkClient.createTopLevelPaths`).
pub const PERSISTENT_PATHS: &[&str] = &[
    "/consumers",
    "/admin/delete_topics",
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

pub fn broker_path(broker_id: i32) -> String {
    format!("{BROKER_IDS}/{broker_id}")
}

/// `/brokers/ids/<id>`: the broker's endpoints (BrokerIdZNode version 5).
pub fn broker_registration_json(host: &str, port: u16, rack: Option<&str>, timestamp_ms: i64) -> String {
    let host = json_string(host);
    let rack = rack.map(|r| format!(",\"rack\":{}", json_string(r))).unwrap_or_default();
    let endpoint = format!("PLAINTEXT://{}:{port}", host.trim_matches('"'));
    format!(
        "{{\"features\":{{}},\"listener_security_protocol_map\":{{\"PLAINTEXT\":\"PLAINTEXT\"}},\
         \"endpoints\":[\"{endpoint}\"],\"jmx_port\":-1,\"port\":{port},\"host\":{host},\"version\":5,\
         \"timestamp\":\"{timestamp_ms}\"{rack}}}"
    )
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registration_is_kafkas_shape() {
        let json = broker_registration_json("127.0.0.1", 9092, None, 42);
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(value["endpoints"][0], "PLAINTEXT://127.0.0.1:9092");
        assert_eq!(value["version"], 5);
        assert_eq!(value["port"], 9092);
        assert_eq!(value["timestamp"], "42");
    }

    #[test]
    fn controller_and_cluster_id_round_trip() {
        assert_eq!(parse_controller_json(controller_json(7, 1).as_bytes()), Some(7));
        assert_eq!(parse_cluster_id_json(cluster_id_json("abc").as_bytes()).as_deref(), Some("abc"));
    }
}
