//! The production seams of the [`super::driver::Driver`]: [`WalDisk`] (the WAL-backed
//! [`WalLogStore`], whose group-commit sync runs on the log's own thread, and a `snapshot`
//! thread for state machines that offer a [`crate::SnapshotJob`]) and [`IpcNetwork`] (the ipc
//! `Transport`).

use super::driver::{Disk, Network};
use super::store::{self, WalLogStore};
use super::wire::{KIND_CLIENT_RESPONSE, KIND_RAFT, ServerFrame};
use crate::encode_message;
use crate::log_store::LogStore;
use crate::message::{Membership, Message, SnapshotMeta};
use crate::raft::Persist;
use crate::state_machine::StateMachine;
use crate::types::Index;
use shmraft_ipc::{Endpoint, OutFrame, SendError, Transport};
use shmraft_storage as st;
use std::collections::HashMap;
use std::time::Instant;

/// A local snapshot whose data a [`crate::SnapshotJob`] writes on another thread, so the loop
/// keeps applying entries and serving clients meanwhile (the core requests no other snapshot
/// until `on_snapshot_written`).
struct SnapshotInProgress {
    meta: SnapshotMeta,
    handle: std::thread::JoinHandle<Result<st::SnapshotWriter, st::StorageError>>,
}

/// The disk seam over the node's data directory. Entries are written into the mapped WAL at
/// once (the core reads them back through the store); a ticket is the last index a persist
/// appended, durable once the log's acknowledgement index (the durable index under
/// `always`/`batch`) covers it. Hard state, snapshot chunks and installs are synced before
/// `submit` returns.
#[derive(Default)]
pub struct WalDisk {
    in_progress: Option<SnapshotInProgress>,
    /// A snapshot written synchronously, reported by the next `poll_snapshot`.
    written: Option<SnapshotMeta>,
}

impl std::fmt::Debug for WalDisk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WalDisk")
            .field("snapshot_in_progress", &self.in_progress.is_some())
            .finish()
    }
}

impl WalDisk {
    /// Lets a snapshot in progress finish at shutdown (it is consistent); a failure only loses
    /// it.
    pub fn finish_on_shutdown(&mut self, store: &mut WalLogStore) {
        if let Some(s) = self.in_progress.take() {
            if let Ok(Ok(w)) = s.handle.join() {
                let m = &s.meta;
                let _ = store.finish_snapshot(
                    w,
                    m.last_included_index,
                    m.last_included_term,
                    &m.membership,
                );
            }
        }
    }
}

impl Disk for WalDisk {
    type Store = WalLogStore;
    type Ticket = Index;
    type Error = st::StorageError;

    fn submit(&mut self, store: &mut WalLogStore, p: &Persist) -> Result<Index, st::StorageError> {
        if let Some(hs) = &p.hard_state {
            store.save_hard_state(hs)?;
        }
        for c in &p.snapshot_chunks {
            store.write_snapshot_chunk(c)?;
        }
        if let Some(meta) = &p.install_snapshot {
            store.install_snapshot(meta)?;
        }
        if p.entries.is_empty() {
            return Ok(Index::ZERO);
        }
        store.append_entries(&p.entries)
    }

    fn is_durable(&mut self, store: &WalLogStore, need: Index) -> Result<bool, st::StorageError> {
        let wal = &store.storage().wal;
        if let Some(f) = wal.fatal_error() {
            return Err(st::StorageError::Fatal(f));
        }
        Ok(need.get() <= wal.ack_index().0)
    }

    fn read_snapshot(
        &mut self,
        store: &WalLogStore,
    ) -> Result<Option<(SnapshotMeta, Vec<u8>)>, st::StorageError> {
        store.read_snapshot()
    }

    fn begin_snapshot<M: StateMachine>(
        &mut self,
        store: &mut WalLogStore,
        meta: SnapshotMeta,
        sm: &M,
    ) -> Result<(), st::StorageError> {
        let (i, term, membership) = (
            meta.last_included_index,
            meta.last_included_term,
            &meta.membership,
        );
        if let Some(job) = sm.snapshot_job() {
            // Captured now (cheap for the KV machine); serialised, written and synced on the
            // snapshot thread while the loop goes on.
            let mut w = store.begin_snapshot(i, term, membership)?;
            let handle = std::thread::Builder::new()
                .name("snapshot".into())
                .spawn(move || store::write_snapshot_job(&mut w, job).map(|()| w))
                .map_err(|e| {
                    st::StorageError::Snapshot(format!("cannot start the snapshot thread: {e}"))
                })?;
            self.in_progress = Some(SnapshotInProgress { meta, handle });
        } else {
            let m = store.write_snapshot(i, term, membership, |w| sm.snapshot(w))?;
            self.written = Some(m);
        }
        Ok(())
    }

    fn poll_snapshot(
        &mut self,
        store: &mut WalLogStore,
    ) -> Result<Option<SnapshotMeta>, st::StorageError> {
        if let Some(m) = self.written.take() {
            return Ok(Some(m));
        }
        if !self
            .in_progress
            .as_ref()
            .is_some_and(|s| s.handle.is_finished())
        {
            return Ok(None);
        }
        let s = self.in_progress.take().expect("checked");
        let index = s.meta.last_included_index;
        let w = match s.handle.join() {
            Ok(r) => r?,
            Err(_) => {
                return Err(st::StorageError::Snapshot(format!(
                    "the state machine's snapshot job for index {index} panicked"
                )));
            }
        };
        let m = &s.meta;
        let done = store.finish_snapshot(w, index, m.last_included_term, &m.membership)?;
        // `None`: superseded by a newer snapshot (installed from the leader meanwhile).
        Ok(Some(done.unwrap_or_else(|| store.snapshot_meta())))
    }

    fn compact(&mut self, store: &mut WalLogStore, index: Index) -> Result<(), st::StorageError> {
        store.compact(index)
    }
}

/// The network seam over the ipc `Transport`: Raft messages are encoded as they are queued and
/// sent as one batch per peer; client responses likewise per client (ipc rule 6 of docs/RULES.md:
/// with many requests in flight per connection, one publication and at most one wake-up per turn).
pub struct IpcNetwork {
    pub(super) transport: Transport,
    outbox: HashMap<u32, Vec<Vec<u8>>>,
    client_outbox: HashMap<Endpoint, Vec<Vec<u8>>>,
    started: Instant,
    pub(super) messages_sent: u64,
    pub(super) messages_dropped: u64,
}

impl std::fmt::Debug for IpcNetwork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IpcNetwork")
            .field("messages_sent", &self.messages_sent)
            .finish()
    }
}

impl IpcNetwork {
    pub fn new(transport: Transport) -> IpcNetwork {
        IpcNetwork {
            transport,
            outbox: HashMap::new(),
            client_outbox: HashMap::new(),
            started: Instant::now(),
            messages_sent: 0,
            messages_dropped: 0,
        }
    }

    pub fn transport(&self) -> &Transport {
        &self.transport
    }

    pub fn into_transport(self) -> Transport {
        self.transport
    }

    fn flush_peers(&mut self) {
        for (to, msgs) in self.outbox.iter_mut() {
            if msgs.is_empty() {
                continue;
            }
            let frames: Vec<OutFrame<'_>> = msgs
                .iter()
                .map(|b| OutFrame {
                    kind: KIND_RAFT,
                    payload: b,
                })
                .collect();
            match self.transport.send_batch(Endpoint::Node(*to), &frames) {
                Ok(()) => self.messages_sent += frames.len() as u64,
                // A full ring or a dead peer is normal: Raft resends from the log (ipc rule 7
                // of docs/RULES.md).
                Err(SendError::Full { .. } | SendError::PeerDown { .. }) => {
                    self.messages_dropped += frames.len() as u64
                }
                Err(e) => {
                    self.messages_dropped += frames.len() as u64;
                    tracing::debug!(to, error = %e, "send failed");
                }
            }
            msgs.clear();
        }
    }

    fn flush_clients(&mut self) {
        // Clients come and go: forget the ones with nothing queued.
        self.client_outbox.retain(|_, v| !v.is_empty());
        for (client, resps) in self.client_outbox.iter_mut() {
            let frames: Vec<OutFrame<'_>> = resps
                .iter()
                .map(|b| OutFrame {
                    kind: KIND_CLIENT_RESPONSE,
                    payload: b,
                })
                .collect();
            if let Err(e) = self.transport.send_batch(*client, &frames) {
                // The client is gone or slow; it times out and retries (exactly-once sessions).
                tracing::debug!(%client, error = %e, "responses not delivered");
            }
            resps.clear();
        }
    }
}

impl Network for IpcNetwork {
    type Client = Endpoint;

    fn send(&mut self, m: Message) {
        match encode_message(&m) {
            Ok(b) => self.outbox.entry(m.to.get() as u32).or_default().push(b),
            Err(e) => tracing::error!(error = %e, "cannot encode a Raft message"),
        }
    }

    fn respond(&mut self, client: Endpoint, f: ServerFrame) {
        self.client_outbox
            .entry(client)
            .or_default()
            .push(f.encode());
    }

    fn flush(&mut self) {
        self.flush_peers();
        self.flush_clients();
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }
}

/// The membership a node reports before any snapshot exists.
pub(super) fn initial_membership(voters: &[crate::types::NodeId]) -> Membership {
    Membership {
        voters: voters.to_vec(),
        voters_outgoing: Vec::new(),
    }
}
