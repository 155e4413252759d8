//! The hard state (Raft §5, Figure 2: currentTerm, votedFor; plus commitIndex), in a two-slot
//! file (see `slotfile`). Term and vote changes are synced before `save` returns, whatever the
//! fsync policy (storage rule 8 of docs/RULES.md): a vote may be sent only after that.

use crate::error::{Result, StorageError};
use crate::format::{HARD_STATE_FILE, HARD_STATE_MAGIC};
use crate::ledger::Ledger;
use crate::slotfile::SlotFile;
use crate::sys::Faults;
use crate::types::{LogIndex, LogTerm};
use std::path::Path;
use std::sync::Arc;

/// The persistent state a Raft server must not forget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HardState {
    /// currentTerm: latest term this server has seen. Only grows. Must persist before any
    /// message of that term is sent.
    pub current_term: LogTerm,
    /// votedFor: the node voted for in `current_term`; 0 = none (the consensus crate's
    /// `NodeId` sentinel). Must persist before the vote is sent.
    pub voted_for: u64,
    /// commitIndex: a lower bound of the commit index; advisory (Raft recovers it from the
    /// leader), so it is synced only together with a term/vote change, whatever the policy.
    pub commit_index: LogIndex,
}

/// The hard-state file of an open data directory.
#[derive(Debug)]
pub struct HardStateStore {
    file: SlotFile,
    ledger: Arc<Ledger>,
    faults_poisoned: Option<Arc<crate::error::FatalError>>,
}

impl HardStateStore {
    pub(crate) fn open(dir: &Path, ledger: Arc<Ledger>, faults: Faults) -> Result<HardStateStore> {
        let file = SlotFile::open(dir, HARD_STATE_FILE, HARD_STATE_MAGIC, faults)?;
        ledger.set_hard_state_synced(file.synced_generation());
        Ok(HardStateStore {
            file,
            ledger,
            faults_poisoned: None,
        })
    }

    /// The current hard state (as last saved).
    pub fn get(&self) -> HardState {
        let s = self.file.current();
        HardState {
            current_term: LogTerm(s.a),
            voted_for: s.b,
            commit_index: LogIndex(s.c),
        }
    }

    /// Saves `hs`. Synced before returning when the term or the vote changed (storage rule 8
    /// of docs/RULES.md); a change of the commit index alone is written, not synced: it is
    /// advisory, and syncing it would add a whole fdatasync to every commit on every node (under
    /// `always` it doubled the latency of a write). Returns whether it was synced. The term must
    /// not go backwards.
    pub fn save(&mut self, hs: &HardState) -> Result<bool> {
        if let Some(f) = &self.faults_poisoned {
            return Err(StorageError::Fatal(f.clone()));
        }
        let cur = self.get();
        if hs.current_term < cur.current_term {
            return Err(StorageError::InvalidOptions(format!(
                "hard state term would go back from {} to {}",
                cur.current_term, hs.current_term
            )));
        }
        if *hs == cur {
            return Ok(false);
        }
        let must_sync = hs.current_term != cur.current_term || hs.voted_for != cur.voted_for;
        match self.file.write(
            hs.current_term.0,
            hs.voted_for,
            hs.commit_index.0,
            must_sync,
        ) {
            Ok(()) => {}
            Err(StorageError::Fatal(f)) => {
                self.faults_poisoned = Some(f.clone());
                return Err(StorageError::Fatal(f));
            }
            Err(e) => return Err(e),
        }
        if must_sync {
            self.ledger
                .set_hard_state_synced(self.file.synced_generation());
        }
        Ok(must_sync)
    }

    /// Syncs the last saved value if it is not synced yet.
    pub fn sync(&mut self) -> Result<()> {
        if let Some(f) = &self.faults_poisoned {
            return Err(StorageError::Fatal(f.clone()));
        }
        if let Err(f) = self.file.sync() {
            self.faults_poisoned = Some(f.clone());
            return Err(StorageError::Fatal(f));
        }
        self.ledger
            .set_hard_state_synced(self.file.synced_generation());
        Ok(())
    }

    /// Path of the hard-state file.
    pub fn path(&self) -> &Path {
        self.file.path()
    }
}
