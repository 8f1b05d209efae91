//! A new session joining the cluster: connecting (and the chroot), then the cluster id, a broker
//! id if none was configured, and this broker's ephemeral registration.

use std::time::Duration;

use zookeeper_client::{Client, Error as ZkError};

use crate::paths::{self, ephemeral, persistent};
use crate::{BrokerEndpoint, Joined, ZkConfig};

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// Splits `host:port,host:port/chroot` into the servers and the chroot ("" for none).
pub fn split_chroot(connect: &str) -> (&str, &str) {
    match connect.find('/') {
        Some(slash) => (&connect[..slash], connect[slash..].trim_end_matches('/')),
        None => (connect, ""),
    }
}

pub(crate) async fn connect(config: &ZkConfig) -> Result<Client, String> {
    let (servers, chroot) = split_chroot(&config.connect);
    let connector = || {
        Client::connector()
            .with_session_timeout(Duration::from_millis(config.session_timeout_ms))
            .with_connection_timeout(Duration::from_millis(config.connection_timeout_ms))
    };
    let client = connector().connect(servers).await.map_err(|e| format!("connecting to ZooKeeper at {servers}: {e}"))?;
    if chroot.is_empty() {
        return Ok(client);
    }
    // The chroot must exist before a chrooted session can use it (Kafka creates it too).
    match client.mkdir(chroot, &persistent()).await {
        Ok(()) | Err(ZkError::NodeExists) => {}
        Err(e) => return Err(format!("creating the chroot {chroot}: {e}")),
    }
    client.chroot(chroot.to_string()).map_err(|_| format!("invalid chroot {chroot:?} in zookeeper.connect"))
}

pub(crate) async fn join(client: &Client, endpoint: &BrokerEndpoint, proposed_cluster_id: &str) -> Result<Joined, String> {
    for path in paths::PERSISTENT_PATHS {
        match client.mkdir(path, &persistent()).await {
            Ok(()) | Err(ZkError::NodeExists) => {}
            Err(e) => return Err(format!("creating {path}: {e}")),
        }
    }
    let cluster_id = cluster_id(client, proposed_cluster_id).await?;
    let broker_id = if endpoint.broker_id >= 0 { endpoint.broker_id } else { generate_broker_id(client).await? };
    register(client, endpoint, broker_id).await?;
    Ok(Joined { broker_id, cluster_id })
}

async fn cluster_id(client: &Client, proposed: &str) -> Result<String, String> {
    loop {
        match client.get_data(paths::CLUSTER_ID).await {
            Ok((data, _)) => {
                return paths::parse_cluster_id_json(&data).ok_or_else(|| format!("{} holds no cluster id", paths::CLUSTER_ID))
            }
            Err(ZkError::NoNode) => {}
            Err(e) => return Err(format!("reading {}: {e}", paths::CLUSTER_ID)),
        }
        let _ = client.mkdir("/cluster", &persistent()).await;
        match client.create(paths::CLUSTER_ID, paths::cluster_id_json(proposed).as_bytes(), &persistent()).await {
            Ok(_) => return Ok(proposed.to_string()),
            Err(ZkError::NodeExists) => continue, // another broker was first: read its id
            Err(e) => return Err(format!("creating {}: {e}", paths::CLUSTER_ID)),
        }
    }
}

/// Kafka's scheme: every write to `/brokers/seqid` bumps its version, which is unique.
async fn generate_broker_id(client: &Client) -> Result<i32, String> {
    loop {
        match client.set_data(paths::BROKER_SEQUENCE_ID, b"", None).await {
            Ok(stat) => return Ok(stat.version + paths::RESERVED_BROKER_MAX_ID),
            Err(ZkError::NoNode) => match client.create(paths::BROKER_SEQUENCE_ID, b"", &persistent()).await {
                Ok(_) | Err(ZkError::NodeExists) => continue,
                Err(e) => return Err(format!("creating {}: {e}", paths::BROKER_SEQUENCE_ID)),
            },
            Err(e) => return Err(format!("writing {}: {e}", paths::BROKER_SEQUENCE_ID)),
        }
    }
}

/// Creates `/brokers/ids/<id>`. If it exists, it may be our own previous session's (a broker
/// restarted right after kill -9): that session expires within its timeout, so wait that long
/// before giving up, where Kafka would refuse to start at once.
async fn register(client: &Client, endpoint: &BrokerEndpoint, broker_id: i32) -> Result<(), String> {
    let path = paths::broker_path(broker_id);
    let deadline = tokio::time::Instant::now() + client.session_timeout() + Duration::from_secs(2);
    loop {
        let data = paths::broker_registration_json(&endpoint.endpoints, endpoint.rack.as_deref(), now_ms());
        match client.create(&path, data.as_bytes(), &ephemeral()).await {
            Ok(_) => return Ok(()),
            Err(ZkError::NodeExists) if tokio::time::Instant::now() < deadline => {
                tracing::info!(path, "broker id still registered by an earlier session; waiting for it to expire");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(ZkError::NodeExists) => {
                return Err(format!("broker.id {broker_id} is registered by a live broker ({path} exists)"))
            }
            Err(e) => return Err(format!("registering {path}: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chroot_is_split_off() {
        assert_eq!(split_chroot("127.0.0.1:2181/kafka"), ("127.0.0.1:2181", "/kafka"));
        assert_eq!(split_chroot("a:1,b:2/x/y/"), ("a:1,b:2", "/x/y"));
        assert_eq!(split_chroot("a:1"), ("a:1", ""));
    }
}
