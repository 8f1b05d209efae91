//! Purging old change notifications, as Kafka's `ZkNodeChangeNotificationListener`
//! (`purgeObsoleteNotifications`) does: the sequential znodes written after every SCRAM user
//! change (`/config/changes/config_change_N`, user_configs.rs) and every ACL change
//! (`/kafka-acl-changes/acl_changes_N`, `/kafka-acl-extended-changes/acl_changes_N`, acls.rs)
//! would otherwise pile up in ZooKeeper forever.
//!
//! Kafka's rule: whenever a notification arrives under a root (and at session start), every
//! broker deletes that root's notifications created (the znode's ctime) more than
//! `changeExpirationMs` ago, 15 minutes. Consequence kept from Kafka: a cluster with no later
//! change keeps its last notifications. Runs on the coordinator thread, never a shard's.
//!
//! One difference: Kafka reads every notification's stat on each round; the sequence order is the
//! creation order, so this stops at the first one young enough (the rest are younger), which keeps
//! a round cheap when thousands of users were just made.

use zookeeper_client::{Client, Error as ZkError, EventType};

use crate::acls::{EXTENDED_CHANGES, LITERAL_CHANGES};
use crate::coordinator::watch_recursively;
use crate::session::now_ms;
use crate::user_configs::CONFIG_CHANGES;

/// Kafka's `changeExpirationMs` default (hard-coded there; `zookeeper.change.notification.expiration.ms`
/// changes ours, a key of ours for tests).
pub const DEFAULT_EXPIRATION_MS: u64 = 15 * 60 * 1000;

/// The notification roots Kafka's brokers listen to and purge.
pub const ROOTS: [&str; 3] = [CONFIG_CHANGES, LITERAL_CHANGES, EXTENDED_CHANGES];

/// Purges each root at session start and after each notification created under it. Loops until
/// the session ends.
pub(crate) async fn follow(client: &Client, expiration_ms: u64) {
    let mut config = watch_recursively(client, CONFIG_CHANGES).await;
    let mut literal = watch_recursively(client, LITERAL_CHANGES).await;
    let mut extended = watch_recursively(client, EXTENDED_CHANGES).await;
    for root in ROOTS {
        purge_logged(client, root, expiration_ms).await;
    }
    loop {
        let (root, event) = tokio::select! {
            event = config.changed() => (CONFIG_CHANGES, event),
            event = literal.changed() => (LITERAL_CHANGES, event),
            event = extended.changed() => (EXTENDED_CHANGES, event),
        };
        // Deletions (ours and the other brokers' purges) ask for nothing.
        if event.event_type == EventType::NodeCreated {
            purge_logged(client, root, expiration_ms).await;
        }
    }
}

async fn purge_logged(client: &Client, root: &str, expiration_ms: u64) {
    match purge(client, root, expiration_ms, now_ms()).await {
        Ok(0) => {}
        Ok(purged) => tracing::debug!(root, purged, "purged change notifications older than {expiration_ms} ms"),
        Err(e) => tracing::warn!(root, error = %e, "purging old change notifications (the next notification tries again)"),
    }
}

/// Deletes `root`'s children created more than `expiration_ms` before `now_ms`, oldest first,
/// stopping at the first younger one. Returns how many it deleted.
pub async fn purge(client: &Client, root: &str, expiration_ms: u64, now_ms: i64) -> Result<usize, ZkError> {
    let mut names = match client.list_children(root).await {
        Ok(names) => names,
        Err(ZkError::NoNode) => return Ok(0),
        Err(e) => return Err(e),
    };
    // Kafka's sequence suffix is zero-padded to ten digits: the name order is the creation order.
    names.sort_unstable();
    let mut purged = 0;
    for name in names {
        let path = format!("{root}/{name}");
        let Some(stat) = client.check_stat(&path).await? else { continue };
        if now_ms.saturating_sub(stat.ctime) <= expiration_ms as i64 {
            break;
        }
        match client.delete(&path, None).await {
            Ok(()) => purged += 1,
            Err(ZkError::NoNode) => {} // another broker purged it first
            Err(e) => return Err(e),
        }
    }
    Ok(purged)
}
