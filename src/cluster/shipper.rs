//! Copies (record keys, payloads) to the other nodes in groups, as blocks are: one lane
//! per peer, a few messages in flight per lane, and every copy queued while they fly
//! goes in the next message. The receiver holds a message's copies at once, so they share its
//! key log's and pack's group commits: a burst of writes pays a round trip and an fsync
//! per group, not per write.
//!
//! A lane's queue is bounded in bytes ([`LANE_BYTES_MAX`]): a copy that does not fit
//! (the peer is slow or cut off) fails at once, and the write counts on the other nodes
//! for its majority.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};

use super::network::{Copy, CopyAnswer, CopyRefused, Network};

/// Bytes of copies queued for one peer, at most.
pub const LANE_BYTES_MAX: usize = 64 << 20;

/// Copies in one message, at most.
const GROUP_COPIES_MAX: usize = 4_096;

/// A message answered later than this is logged.
const SLOW: std::time::Duration = std::time::Duration::from_secs(1);

/// Messages in flight to one peer, at most.
const LANE_IN_FLIGHT: usize = 4;

struct Shipment {
    copy: Copy,
    bytes: usize,
    done: oneshot::Sender<Result<(), CopyRefused>>,
    _room: OwnedSemaphorePermit,
}

struct Lane {
    queue: mpsc::UnboundedSender<Shipment>,
    room: Arc<Semaphore>,
}

/// The lanes to the other nodes, started on first use.
pub struct Shipper {
    net: Network,
    handle: tokio::runtime::Handle,
    lanes: Mutex<HashMap<String, Lane>>,
}

impl Shipper {
    pub fn new(net: Network, handle: tokio::runtime::Handle) -> Shipper {
        Shipper {
            net,
            handle,
            lanes: Mutex::new(HashMap::new()),
        }
    }

    /// Queues `copy` for the node at `raft`; resolves once that node holds it (or
    /// refused it, or could not be reached).
    pub async fn ship(&self, raft: &str, copy: Copy) -> Result<(), CopyRefused> {
        let bytes = copy.bytes();
        let (done, answer) = oneshot::channel();
        {
            let mut lanes = self.lanes.lock().unwrap_or_else(|p| p.into_inner());
            let lane = lanes
                .entry(raft.to_owned())
                .or_insert_with(|| self.start_lane(raft));
            let permits = u32::try_from(bytes.min(LANE_BYTES_MAX)).unwrap_or(u32::MAX);
            let room = lane
                .room
                .clone()
                .try_acquire_many_owned(permits)
                .map_err(|_| {
                    CopyRefused::Failed(format!("the queue of copies to {raft} is full"))
                })?;
            let shipment = Shipment {
                copy,
                bytes,
                done,
                _room: room,
            };
            if lane.queue.send(shipment).is_err() {
                return Err(CopyRefused::Failed(format!("the lane to {raft} stopped")));
            }
        }
        answer
            .await
            .unwrap_or_else(|_| Err(CopyRefused::Failed(format!("the lane to {raft} stopped"))))
    }

    fn start_lane(&self, raft: &str) -> Lane {
        let (queue, rx) = mpsc::unbounded_channel();
        let budget = self.net.copy_bytes();
        self.handle
            .spawn(lane(self.net.clone(), raft.to_owned(), rx, budget));
        Lane {
            queue,
            room: Arc::new(Semaphore::new(LANE_BYTES_MAX)),
        }
    }
}

/// Sends what is queued for `raft`, a group per message, at most [`LANE_IN_FLIGHT`]
/// messages at once (one slow answer holds up only its own group), until the shipper is
/// dropped.
async fn lane(
    net: Network,
    raft: String,
    mut rx: mpsc::UnboundedReceiver<Shipment>,
    budget: usize,
) {
    let in_flight = Arc::new(Semaphore::new(LANE_IN_FLIGHT));
    let mut carry: Option<Shipment> = None;
    loop {
        let Ok(slot) = in_flight.clone().acquire_owned().await else {
            return;
        };
        let first = match carry.take() {
            Some(s) => s,
            None => match rx.recv().await {
                Some(s) => s,
                None => return,
            },
        };
        let mut bytes = first.bytes;
        let mut group = vec![first];
        while group.len() < GROUP_COPIES_MAX {
            match rx.try_recv() {
                Ok(s) if bytes + s.bytes > budget => {
                    carry = Some(s);
                    break;
                }
                Ok(s) => {
                    bytes += s.bytes;
                    group.push(s);
                }
                Err(_) => break,
            }
        }
        let (net, raft) = (net.clone(), raft.clone());
        tokio::spawn(async move {
            let _slot = slot;
            send_group(&net, &raft, group).await;
        });
    }
}

/// Sends one group and tells each waiter what became of its copy.
async fn send_group(net: &Network, raft: &str, group: Vec<Shipment>) {
    let (copies, waiting): (Vec<Copy>, Vec<_>) = group
        .into_iter()
        .map(|s| (s.copy, (s.done, s._room)))
        .unzip();
    let started = std::time::Instant::now();
    let sent = net.send_copies(raft, &copies).await;
    if started.elapsed() > SLOW {
        let ms = started.elapsed().as_millis() as u64;
        tracing::warn!(
            to = raft,
            copies = copies.len(),
            ms,
            ok = sent.is_ok(),
            "slow copies"
        );
    }
    match sent {
        Ok(answers) => {
            for ((done, _room), answer) in waiting.into_iter().zip(answers) {
                let _ = done.send(match answer {
                    CopyAnswer::Held => Ok(()),
                    CopyAnswer::Erased => Err(CopyRefused::Erased),
                    CopyAnswer::Failed(e) => Err(CopyRefused::Failed(format!("{raft}: {e}"))),
                });
            }
        }
        Err(e) => {
            for (done, _room) in waiting {
                let _ = done.send(Err(CopyRefused::Failed(e.clone())));
            }
        }
    }
}
