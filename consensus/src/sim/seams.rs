//! The simulator's seams for the production [`Driver`]: a simulated disk ([`SimDisk`]: writes
//! become durable only when the simulator completes them, in order; a power cut loses the rest or
//! tears the first), a simulated network ([`SimNet`]: outgoing messages and client responses are
//! collected for the simulator to check, delay, drop, duplicate or reorder), and a state machine
//! wrapper ([`CheckedMachine`]) that records every apply and restore for the safety checks.

use super::Violation;
use super::machine::{self, SimMachine};
use crate::log_store::{LogStore, MemLogStore};
use crate::message::{Entry, EntryKind, HardState, Message, Payload, SnapshotMeta};
use crate::node::driver::{Disk, Driver, MemDisk, Network};
use crate::node::wire::ServerFrame;
use crate::raft::{Persist, SnapshotChunk};
use crate::state_machine::StateMachine;
use crate::types::Index;
use std::collections::VecDeque;
use std::io::{self, Read, Write};

/// The production driver over the simulated seams.
pub type SimDriver = Driver<SimDisk, SimNet, CheckedMachine>;

/// The durable parts of one `Persist`, waiting for the simulated disk.
#[derive(Clone, Debug)]
pub struct SimWrite {
    pub hard_state: Option<HardState>,
    pub snapshot_chunks: Vec<SnapshotChunk>,
    pub install_snapshot: Option<SnapshotMeta>,
    pub entries: Vec<Entry>,
}

impl SimWrite {
    /// What a driver's write does to the disk, once it completes.
    pub fn apply_to(&self, store: &mut MemLogStore) {
        MemDisk::write(
            store,
            self.hard_state,
            &self.snapshot_chunks,
            self.install_snapshot.as_ref(),
            &self.entries,
        );
    }
}

/// A simulated disk. `submit` only queues; the simulator draws each write's latency, and its
/// `DiskDone` event completes the oldest write into the store (`MemLogStore` holds exactly what
/// is durable). A local snapshot completes likewise at `SnapshotDone`.
#[derive(Debug, Default)]
pub struct SimDisk {
    /// Submitted, not yet durable, oldest first, with their tickets.
    pub(super) writes: VecDeque<(u64, SimWrite)>,
    submitted: u64,
    completed: u64,
    /// Writes submitted since the simulator last scheduled their completion.
    pub(super) unscheduled: usize,
    snapshot: Option<(SnapshotMeta, Payload)>,
    pub(super) snapshot_unscheduled: bool,
    snapshot_done: bool,
}

impl SimDisk {
    /// Completes the oldest write: returns it after putting it in the store.
    pub(super) fn complete_one(&mut self, store: &mut MemLogStore) -> Option<SimWrite> {
        let (ticket, w) = self.writes.pop_front()?;
        w.apply_to(store);
        self.completed = ticket;
        Some(w)
    }

    pub(super) fn complete_snapshot(&mut self) {
        self.snapshot_done = self.snapshot.is_some();
    }
}

impl Disk for SimDisk {
    type Store = MemLogStore;
    type Ticket = u64;
    type Error = Violation;

    fn submit(&mut self, _store: &mut MemLogStore, p: &Persist) -> Result<u64, Violation> {
        self.submitted += 1;
        let w = SimWrite {
            hard_state: p.hard_state,
            snapshot_chunks: p.snapshot_chunks.clone(),
            install_snapshot: p.install_snapshot.clone(),
            entries: p.entries.clone(),
        };
        self.writes.push_back((self.submitted, w));
        self.unscheduled += 1;
        Ok(self.submitted)
    }

    fn is_durable(&mut self, _store: &MemLogStore, t: u64) -> Result<bool, Violation> {
        Ok(t <= self.completed)
    }

    fn read_snapshot(
        &mut self,
        store: &MemLogStore,
    ) -> Result<Option<(SnapshotMeta, Vec<u8>)>, Violation> {
        Ok(Some((
            store.snapshot_meta(),
            store.snapshot_data().as_slice().to_vec(),
        )))
    }

    fn begin_snapshot<M: StateMachine>(
        &mut self,
        _store: &mut MemLogStore,
        meta: SnapshotMeta,
        sm: &M,
    ) -> Result<(), Violation> {
        let mut data = Vec::new();
        sm.snapshot(&mut data)
            .map_err(|e| Violation(format!("snapshot of the state machine: {e}")))?;
        self.snapshot = Some((meta, Payload::new(data)));
        self.snapshot_unscheduled = true;
        self.snapshot_done = false;
        Ok(())
    }

    fn poll_snapshot(
        &mut self,
        store: &mut MemLogStore,
    ) -> Result<Option<SnapshotMeta>, Violation> {
        if !self.snapshot_done {
            return Ok(None);
        }
        self.snapshot_done = false;
        let Some((meta, data)) = self.snapshot.take() else {
            return Ok(None);
        };
        store.set_snapshot(meta.clone(), data);
        Ok(Some(meta))
    }

    fn compact(&mut self, store: &mut MemLogStore, index: Index) -> Result<(), Violation> {
        store.compact(index);
        Ok(())
    }
}

/// A simulated network endpoint: what the driver sends waits here until the simulator takes it
/// (at the end of the driver's step) and decides its fate.
#[derive(Debug, Default)]
pub struct SimNet {
    /// Virtual time, set by the simulator before each step.
    pub(super) now: u64,
    pub(super) out: Vec<Message>,
    /// (client, response) in the order the driver answered.
    pub(super) replies: Vec<(usize, ServerFrame)>,
}

impl Network for SimNet {
    type Client = usize;

    fn send(&mut self, m: Message) {
        self.out.push(m);
    }

    fn respond(&mut self, client: usize, f: ServerFrame) {
        self.replies.push((client, f));
    }

    fn flush(&mut self) {}

    fn now_ms(&self) -> u64 {
        self.now
    }
}

/// One observation of the state machine, checked by the simulator after each step.
#[derive(Clone, Copy, Debug)]
pub enum ApplyRecord {
    /// A command applied at `index`: its hash and the state digest after it.
    Applied {
        index: Index,
        hash: u64,
        digest: u64,
    },
    /// The state replaced from a snapshot: the digest after.
    Restored { digest: u64 },
}

/// The simulated nodes' state machine with a record of what the driver did to it.
pub struct CheckedMachine {
    pub inner: SimMachine,
    pub(super) records: Vec<ApplyRecord>,
}

impl CheckedMachine {
    pub fn new() -> CheckedMachine {
        CheckedMachine {
            inner: machine::new_machine(),
            records: Vec::new(),
        }
    }
}

impl Default for CheckedMachine {
    fn default() -> Self {
        CheckedMachine::new()
    }
}

/// The hash the checker keeps per (index, term) and per applied index.
pub fn entry_hash(kind: EntryKind, data: &[u8]) -> u64 {
    let mut h = crc32fast::Hasher::new();
    h.update(&[kind as u8]);
    h.update(data);
    (h.finalize() as u64) ^ (data.len() as u64) << 32
}

impl StateMachine for CheckedMachine {
    fn apply(&mut self, index: Index, command: &[u8]) -> Vec<u8> {
        let r = self.inner.apply(index, command);
        self.records.push(ApplyRecord::Applied {
            index,
            hash: entry_hash(EntryKind::Normal, command),
            digest: self.inner.digest(),
        });
        r
    }
    fn query(&self, query: &[u8]) -> Vec<u8> {
        self.inner.query(query)
    }
    fn snapshot(&self, out: &mut dyn Write) -> io::Result<()> {
        self.inner.snapshot(out)
    }
    fn restore(&mut self, input: &mut dyn Read) -> io::Result<()> {
        self.inner = machine::new_machine();
        self.inner.restore(input)?;
        self.records.push(ApplyRecord::Restored {
            digest: self.inner.digest(),
        });
        Ok(())
    }
    fn digest(&self) -> u64 {
        self.inner.digest()
    }
}
