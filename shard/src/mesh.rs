//! The channels between shards: one bounded glommio shared channel per ordered pair of shards,
//! all made on the starting thread before any shard runs, and handed to each shard as its ends.
//! A shard's id is its index in the list.
//!
//! Why not glommio's `MeshBuilder`: its `join` registers peers in an `Rc` shared by every
//! executor thread and connects one peer's channels at a time after a notification round. Under
//! load (4 shards on 2 busy cores) one start in a few hundred never finished: a shard spun in
//! `join` forever while the others slept, and the broker never became ready (a CI flake). Here
//! nothing is shared but the channels themselves, and each shard connects all its ends at once.
//! This alone did not end the hangs: with it, all shards were once seen asleep while connecting
//! (a lost glommio wake-up), which `runtime::start_shards`' wake ticker bounds. Whether the
//! ticker alone would have sufficed with `MeshBuilder` is not tested. Wake-ups are lost at run
//! time too, on these channels and on the answers' wakers: runtime.rs, "Lost wake-ups".

use glommio::channels::shared_channel::{self, ConnectedReceiver, ConnectedSender, SharedReceiver, SharedSender};

/// One shard's unconnected ends: a sender to every other shard and a receiver from each.
pub struct MeshEnds<T: Send> {
    senders: Vec<Option<SharedSender<T>>>,
    receivers: Vec<Option<SharedReceiver<T>>>,
}

/// One shard's connected ends, indexed by peer shard (None at its own index).
pub struct MeshChannels<T: Send> {
    pub senders: Vec<Option<ConnectedSender<T>>>,
    pub receivers: Vec<Option<ConnectedReceiver<T>>>,
}

/// The ends of every shard of a full mesh of `shard_count` shards, each channel `depth` deep.
pub fn full_mesh<T: Send + 'static>(shard_count: usize, depth: usize) -> Vec<MeshEnds<T>> {
    let mut ends: Vec<MeshEnds<T>> = (0..shard_count)
        .map(|_| MeshEnds {
            senders: (0..shard_count).map(|_| None).collect(),
            receivers: (0..shard_count).map(|_| None).collect(),
        })
        .collect();
    for from in 0..shard_count {
        for to in 0..shard_count {
            if from != to {
                let (sender, receiver) = shared_channel::new_bounded(depth);
                ends[from].senders[to] = Some(sender);
                ends[to].receivers[from] = Some(receiver);
            }
        }
    }
    ends
}

impl<T: Send + 'static> MeshEnds<T> {
    /// Connects every end on the calling shard. Each connection completes once the other shard
    /// connects its end too, so every shard must call this (they do, first thing).
    pub async fn connect(self) -> MeshChannels<T> {
        // All at once: connecting one end at a time would make each shard wait for its peers in
        // an order they might not share.
        let senders: Vec<_> = self
            .senders
            .into_iter()
            .map(|end| end.map(|end| glommio::spawn_local(end.connect()).detach()))
            .collect();
        let receivers: Vec<_> = self
            .receivers
            .into_iter()
            .map(|end| end.map(|end| glommio::spawn_local(end.connect()).detach()))
            .collect();
        let mut channels = MeshChannels { senders: Vec::new(), receivers: Vec::new() };
        for sender in senders {
            channels.senders.push(match sender {
                Some(task) => Some(task.await.expect("a mesh connection task is never cancelled")),
                None => None,
            });
        }
        for receiver in receivers {
            channels.receivers.push(match receiver {
                Some(task) => Some(task.await.expect("a mesh connection task is never cancelled")),
                None => None,
            });
        }
        channels
    }
}
