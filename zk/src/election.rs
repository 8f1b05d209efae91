//! Controller election and the controller epoch, Kafka's way (see `elect`).

use std::cell::Cell;
use std::time::Duration;

use zookeeper_client::{Client, Error as ZkError};

use crate::controller::ControllerFence;
use crate::paths::{self, ephemeral, persistent};
use crate::session::now_ms;
use crate::ClusterView;

/// Controller election (Kafka's): whoever creates the ephemeral `/controller` is the controller
/// and bumps `/controller_epoch` with a conditional write; everyone watches `/controller` and runs
/// again when it goes away. Loops until the session ends.
pub(crate) async fn elect(client: &Client, broker_id: i32, view: &ClusterView, fence: &Cell<Option<ControllerFence>>, wake: &tokio::sync::Notify) {
    loop {
        let data = paths::controller_json(broker_id, now_ms());
        match client.create(paths::CONTROLLER, data.as_bytes(), &ephemeral()).await {
            Ok(_) => match bump_controller_epoch(client).await {
                Ok(won) => {
                    view.set_controller(broker_id, won.epoch);
                    fence.set(Some(won));
                    wake.notify_one(); // the controller's first pass over every partition
                    tracing::info!(broker_id, epoch = won.epoch, "became the controller");
                }
                Err(e) => {
                    // Not safe to act as controller without a fresh epoch: resign.
                    tracing::error!(error = %e, "bumping the controller epoch failed; resigning");
                    let _ = client.delete(paths::CONTROLLER, None).await;
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            },
            Err(ZkError::NodeExists) => {}
            Err(e) => {
                tracing::error!(error = %e, "controller election failed");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        }
        let (data, _, watcher) = match client.get_and_watch_data(paths::CONTROLLER).await {
            Ok(found) => found,
            Err(ZkError::NoNode) => continue, // gone already: elect again
            Err(e) => {
                tracing::error!(error = %e, "watching {}", paths::CONTROLLER);
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if let Some(controller) = paths::parse_controller_json(&data) {
            if controller != broker_id {
                if fence.take().is_some() {
                    tracing::warn!(controller, "no longer the controller");
                }
                let epoch = read_controller_epoch(client).await.unwrap_or(view.controller_epoch());
                let previous = view.controller_id();
                view.set_controller(controller, epoch);
                if previous != controller {
                    tracing::info!(controller, previous, epoch, "controller changed: it is elsewhere");
                }
            }
        }
        let event = watcher.changed().await;
        if event.event_type == zookeeper_client::EventType::NodeDeleted {
            tracing::info!(previous = view.controller_id(), "the controller resigned or its session ended: electing");
        }
    }
}

async fn read_controller_epoch(client: &Client) -> Result<i32, String> {
    let (data, _) = client.get_data(paths::CONTROLLER_EPOCH).await.map_err(|e| e.to_string())?;
    std::str::from_utf8(&data).ok().and_then(|s| s.trim().parse().ok()).ok_or_else(|| "unparsable controller epoch".into())
}

/// Increments `/controller_epoch` conditionally on the version read, so two controllers can never
/// both believe they hold the same epoch. Returns the epoch and the znode version that fence this
/// controller's writes.
pub async fn bump_controller_epoch(client: &Client) -> Result<ControllerFence, String> {
    loop {
        match client.get_data(paths::CONTROLLER_EPOCH).await {
            Ok((data, stat)) => {
                let epoch: i32 = std::str::from_utf8(&data).ok().and_then(|s| s.trim().parse().ok()).unwrap_or(0);
                let next = epoch + 1;
                match client.set_data(paths::CONTROLLER_EPOCH, next.to_string().as_bytes(), Some(stat.version)).await {
                    Ok(stat) => return Ok(ControllerFence { epoch: next, epoch_zk_version: stat.version }),
                    Err(ZkError::BadVersion) => continue,
                    Err(e) => return Err(e.to_string()),
                }
            }
            Err(ZkError::NoNode) => match client.create(paths::CONTROLLER_EPOCH, b"1", &persistent()).await {
                Ok((stat, _)) => return Ok(ControllerFence { epoch: 1, epoch_zk_version: stat.version }),
                Err(ZkError::NodeExists) => continue,
                Err(e) => return Err(e.to_string()),
            },
            Err(e) => return Err(e.to_string()),
        }
    }
}
