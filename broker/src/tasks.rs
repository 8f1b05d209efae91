//! A shard's continuous work: accepting connections, and the periodic log maintenance (retention
//! and time-based flush), until shutdown.

mod cleaner;

use std::rc::Rc;
use std::time::Duration;

use glommio::net::TcpListener;

use crate::connection::{self, SHUTDOWN_GRACE_MS};
use crate::connection_quotas::Refusal;
use crate::groups::{loader, membership, offsets, offsets_writer};
use crate::clock::now_ms;
use crate::shard_context::Shard;

/// How often a shard checks the shutdown flag set by the signal handler.
const SHUTDOWN_POLL_MS: u64 = 100;

/// Serves until SIGTERM, then stops accepting, lets connections finish their request, flushes
/// every log. Returns false if a log could not be flushed.
pub async fn serve_until_shutdown(shard: Rc<Shard>) -> bool {
    let config = &shard.broker.config;
    // Every listener on every accepting shard (SO_REUSEPORT spreads connections over them).
    let mut sockets = Vec::new();
    if config.accepts_on(shard.id()) {
        for (index, listener) in config.listeners.iter().enumerate() {
            match TcpListener::bind(listener.bind) {
                Ok(socket) => sockets.push((index, socket)),
                Err(e) => {
                    tracing::error!(shard = shard.id(), listener = listener.name, address = %listener.bind, error = %e, "cannot listen");
                    let _ = shard.broker.start_failure.set(format!("cannot listen on {} ({}): {e}", listener.bind, listener.name));
                    shard.broker.shutting_down.store(true, std::sync::atomic::Ordering::Release);
                    return false;
                }
            }
        }
    }
    // Before this shard counts as listening, so the endpoint is up once "broker ready" is logged.
    let Ok(metrics_endpoint) = crate::metrics_endpoint::http::start(shard.clone()) else { return false };
    let listening = match sockets.first() {
        Some(_) => shard.broker.shards_listening.fetch_add(1, std::sync::atomic::Ordering::AcqRel) + 1,
        None => 0,
    };
    if listening == config.listening_shard_count(shard.router.shard_count()) {
        // Tests and scripts wait for this line: every shard accepts from here on.
        tracing::info!(listener = %shard.broker.config.listener, "broker ready");
    }
    let maintenance = glommio::spawn_local(maintain_logs(shard.clone()));
    let log_cleaner = cleaner::start(shard.clone());
    let group_timers = glommio::spawn_local(expire_group_members(shard.clone()));
    let offsets_writer = glommio::spawn_local(offsets_writer::run_writer(shard.groups.clone()));
    let acceptors: Vec<_> =
        sockets.into_iter().map(|(index, socket)| glommio::spawn_local(accept_connections(shard.clone(), socket, index))).collect();
    let followers = glommio::spawn_local(crate::replication::follower::follow_leaders(shard.clone()));
    let group_leadership = glommio::spawn_local(loader::follow_leadership(shard.groups.clone()));
    let transactions = glommio::spawn_local(crate::txn_router::run_transaction_tasks(shard.clone()));
    while !shard.broker.is_shutting_down() {
        glommio::timer::sleep(Duration::from_millis(SHUTDOWN_POLL_MS)).await;
    }
    drop(acceptors); // stops accepting
    drop(metrics_endpoint);
    drop(maintenance);
    drop(group_timers);
    drop(group_leadership);
    drop(transactions);
    followers.await; // its fetchers see the shutdown flag and stop
    if let Some(log_cleaner) = log_cleaner {
        // It sees the shutdown flag between batches and before a swap; a swap under way ends.
        log_cleaner.await;
    }
    shard.shutdown.notify_all();
    shard.partitions.appended.notify_all();
    membership::fail_waiting(&shard.groups);
    let started = std::time::Instant::now();
    while shard.connections.get() > 0 && started.elapsed() < Duration::from_millis(SHUTDOWN_GRACE_MS) {
        glommio::timer::sleep(Duration::from_millis(10)).await;
    }
    // Queued offset commits and group records reach the log before it is flushed.
    offsets_writer::close_writes(&shard.groups);
    offsets_writer.await;
    shard.partitions.close_all().await
}

/// How often member sessions, rebalance deadlines and the initial delay are checked: the
/// granularity of every group timer.
const GROUP_TIMER_TICK_MS: u64 = 50;

/// Session timeouts and rebalance deadlines of this shard's groups; `offsets.retention.minutes`
/// every `offsets.retention.check.interval.ms`.
async fn expire_group_members(shard: Rc<Shard>) {
    let retention_every_ms = shard.broker.config.offsets_retention_check_interval_ms.max(10) as i64;
    let mut last_retention_ms = now_ms();
    loop {
        glommio::timer::sleep(Duration::from_millis(GROUP_TIMER_TICK_MS)).await;
        membership::expire(&shard.groups, std::time::Instant::now());
        let now = now_ms();
        if now - last_retention_ms >= retention_every_ms {
            last_retention_ms = now;
            offsets::expire_offsets(&shard.groups, now).await;
        }
    }
}

/// How often an accept loop paused at `max.connections` (or its listener's limit) looks for a
/// freed slot. Slots free on any shard; polling one atomic every few milliseconds while full
/// costs nothing, where a cross-shard wake-up would add a message to every close.
const SLOT_POLL_MS: u64 = 5;

/// Accepts on listener `index` (of `config.listeners`), under the broker-wide connection limits
/// (`connection_quotas.rs` says how Kafka's behaviour maps to these loops).
async fn accept_connections(shard: Rc<Shard>, listener: TcpListener, index: usize) {
    let quotas = shard.broker.connection_quotas.clone();
    let name = shard.broker.config.listeners[index].name.clone();
    let mut last_accept_error_ms = i64::MIN / 2;
    loop {
        let stream = match listener.accept().await {
            Ok(stream) => stream,
            Err(e) => {
                // Out of descriptors (EMFILE) this repeats every 10 ms until one frees: say it
                // once a minute, with the budget logged at start ("descriptor budget").
                if now_ms() - last_accept_error_ms >= 60_000 {
                    last_accept_error_ms = now_ms();
                    tracing::warn!(listener = name, error = %e, "accept failed (logged at most once a minute)");
                }
                glommio::timer::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let Ok(peer) = stream.peer_addr() else { continue }; // gone already
        let slot = loop {
            match quotas.take_slot(index, peer.ip()) {
                Ok(slot) => break Some(slot),
                Err(Refusal::TooManyFromIp { limit }) => {
                    crate::metrics::connection_refused(&name);
                    if let Some(refused) = quotas.refusal_to_log(now_ms()) {
                        tracing::warn!(listener = name, ip = %peer.ip(), limit, refused, "closing new connections over max.connections.per.ip (logged at most once a minute; refused counts them since the last line)");
                    }
                    break None;
                }
                Err(Refusal::Full) => {
                    // As Kafka's acceptor blocks: this connection and those behind it in the
                    // listen backlog wait, unserved, until a connection closes anywhere.
                    if quotas.full_to_log(now_ms()) {
                        let config = &shard.broker.config;
                        tracing::warn!(listener = name, open = quotas.total(), max_connections = config.max_connections, listener_max_connections = config.listener_max_connections[index], "connection limit reached: new connections wait until one closes (logged at most once a minute)");
                    }
                    glommio::timer::sleep(Duration::from_millis(SLOT_POLL_MS)).await;
                }
            }
        };
        let Some(slot) = slot else { continue }; // dropping the stream closes it
        shard.connections.set(shard.connections.get() + 1);
        crate::metrics::connection_opened(&name);
        let shard = shard.clone();
        let name = name.clone();
        glommio::spawn_local(async move {
            connection::serve(shard.clone(), stream, index).await;
            drop(slot);
            shard.connections.set(shard.connections.get() - 1);
            crate::metrics::connection_closed(&name);
        })
        .detach();
    }
}

/// Retention every `log.retention.check.interval.ms`, time-based flush every
/// `log.flush.scheduler.interval.ms`, recovery point checkpoints every
/// `log.flush.offset.checkpoint.interval.ms`, for the partitions this shard owns.
async fn maintain_logs(shard: Rc<Shard>) {
    let config = &shard.broker.config;
    let flush_every_ms = config.log_flush_scheduler_interval_ms.max(10) as i64;
    let retention_every_ms = config.log_retention_check_interval_ms.max(10) as i64;
    let checkpoint_every_ms = config.log_flush_offset_checkpoint_interval_ms.max(10) as i64;
    // Each job on its own schedule, as Kafka's scheduler runs them: wake for the most frequent.
    let tick = Duration::from_millis(flush_every_ms.min(retention_every_ms).min(checkpoint_every_ms) as u64);
    let mut last_flush_ms = now_ms();
    let mut last_retention_ms = now_ms();
    let mut last_checkpoint_ms = now_ms();
    loop {
        glommio::timer::sleep(tick).await;
        let now = now_ms();
        let check_flush = now - last_flush_ms >= flush_every_ms;
        if check_flush {
            last_flush_ms = now;
        }
        let check_retention = now - last_retention_ms >= retention_every_ms;
        if check_retention {
            last_retention_ms = now;
        }
        let checkpoint = now - last_checkpoint_ms >= checkpoint_every_ms;
        if checkpoint {
            last_checkpoint_ms = now;
        }
        for handle in shard.partitions.all_open() {
            let (topic, partition) = (&handle.topic, handle.index);
            let mut log = handle.log.write().await.expect("partition lock");
            if handle.is_closed() {
                continue; // deleted meanwhile (its directory is gone) or shutting down
            }
            if check_flush {
                if let Err(e) = log.maybe_flush_on_time(now).await {
                    tracing::error!(topic, partition, error = %e, "time-based flush failed");
                }
            }
            if checkpoint {
                if let Err(e) = log.checkpoint_recovery_point().await {
                    tracing::error!(topic, partition, error = %e, "recovery point checkpoint failed");
                }
            }
            if check_retention {
                if let Err(e) = log.apply_retention(now).await {
                    tracing::error!(topic, partition, error = %e, "retention failed");
                }
            }
        }
    }
}
