//! Loom model of the ring's index protocol (docs/FORMAT.md, "Index protocol"; ipc rules 2, 5,
//! 6, 7 of docs/RULES.md). Run with:
//!
//!     RUSTFLAGS="--cfg loom" cargo test -p shmraft-ipc --test loom --release
//!
//! This is a model, not the code: `ring.rs` reaches its index words through `AtomicU64`s
//! placed in a shared mapping (`shm.rs`), which loom cannot instrument. The model keeps the
//! protocol's shape and every memory ordering of `RingWriter`/`RingReader` (named on each line)
//! with loom's atomics, and the frame bytes in `loom::cell::UnsafeCell`s, so loom reports any
//! interleaving where the reader reads a slot the writer is still writing (or overwrites one
//! the reader has not released), where frames arrive out of order or twice, or where a parked
//! reader sleeps through a publication (a lost wake-up).
//!
//! Loom treats SeqCst loads and stores as AcqRel but implements `fence(SeqCst)`: the park
//! handshake relies only on its two SeqCst fences, as the real code does.
#![cfg(loom)]

use loom::cell::UnsafeCell;
use loom::sync::Arc;
use loom::sync::atomic::{AtomicU64, Ordering, fence};
use loom::thread;

/// Slots in the model ring (a position `p` lives in slot `p % SLOTS`).
const SLOTS: u64 = 2;

struct Ring {
    /// Written only by the writer (`RingWriter::publish`).
    tail: AtomicU64,
    /// Written only by the reader (`RingReader::drain`).
    head: AtomicU64,
    /// The reader's park sequence: odd = parked (`RingReader::park`/`unpark`).
    park_seq: AtomicU64,
    slots: [UnsafeCell<u64>; SLOTS as usize],
}

impl Ring {
    fn new() -> Self {
        Self {
            tail: AtomicU64::new(0),
            head: AtomicU64::new(0),
            park_seq: AtomicU64::new(0),
            slots: std::array::from_fn(|_| UnsafeCell::new(0)),
        }
    }
}

/// The writer's private state (`RingWriter`): last published tail, the pending end, and its
/// cached copy of `head` (reloaded only when the cache says there is no room).
struct Writer {
    ring: Arc<Ring>,
    tail: u64,
    pending: u64,
    head_cache: u64,
    last_woken_park: u64,
}

impl Writer {
    fn new(ring: Arc<Ring>) -> Self {
        Self {
            ring,
            tail: 0,
            pending: 0,
            head_cache: 0,
            last_woken_park: 0,
        }
    }

    /// `RingWriter::room`: the cached head first, then one acquire load of the reader's line.
    fn room(&mut self) -> bool {
        if self.pending - self.head_cache < SLOTS {
            return true;
        }
        let head = self.ring.head.load(Ordering::Acquire);
        assert!(head <= self.tail, "head {head} past tail {}", self.tail);
        self.head_cache = head.max(self.head_cache);
        self.pending - self.head_cache < SLOTS
    }

    /// `RingWriter::write_frame`: writes into unpublished space only.
    fn write(&mut self, value: u64) -> bool {
        if !self.room() {
            return false;
        }
        let slot = (self.pending % SLOTS) as usize;
        // SAFETY: loom's UnsafeCell checks this access against the reader's; the index
        // protocol must make them ordered (that is what the model verifies).
        self.ring.slots[slot].with_mut(|p| unsafe { *p = value });
        self.pending += 1;
        true
    }

    /// `RingWriter::publish`: one store-release of `tail` per batch, then the Dekker side of
    /// the park handshake. Returns whether a wake-up must be sent.
    fn publish(&mut self) -> bool {
        if self.pending == self.tail {
            return false;
        }
        self.tail = self.pending;
        self.ring.tail.store(self.tail, Ordering::Release);
        fence(Ordering::SeqCst);
        let park = self.ring.park_seq.load(Ordering::Relaxed);
        if park % 2 == 1 && park != self.last_woken_park {
            self.last_woken_park = park;
            return true;
        }
        false
    }
}

/// The reader's private state (`RingReader`).
struct Reader {
    ring: Arc<Ring>,
    head: u64,
    park_seq: u64,
}

impl Reader {
    fn new(ring: Arc<Ring>) -> Self {
        Self {
            ring,
            head: 0,
            park_seq: 0,
        }
    }

    /// `RingReader::has_data`: the spin probe.
    fn has_data(&self) -> bool {
        self.ring.tail.load(Ordering::Acquire) != self.head
    }

    /// `RingReader::drain`: acquire-load `tail`, copy out every published frame, then
    /// release the space with one store-release of `head`.
    fn drain(&mut self, out: &mut Vec<u64>) {
        let tail = self.ring.tail.load(Ordering::Acquire);
        assert!(
            self.head <= tail && tail - self.head <= SLOTS,
            "indices head {} tail {tail}",
            self.head
        );
        while self.head < tail {
            let slot = (self.head % SLOTS) as usize;
            // SAFETY: checked by loom against the writer's accesses (see `Writer::write`).
            out.push(self.ring.slots[slot].with(|p| unsafe { *p }));
            self.head += 1;
        }
        self.ring.head.store(self.head, Ordering::Release);
    }

    /// `RingReader::park` + `Transport::before_poll`: announce, fence, re-check. Returns
    /// whether the reader may sleep (nothing published since its last drain).
    fn park_and_recheck(&mut self) -> bool {
        self.park_seq = (self.park_seq + 1) | 1;
        self.ring.park_seq.store(self.park_seq, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        !self.has_data()
    }

    /// `RingReader::unpark`.
    fn unpark(&mut self) {
        if self.park_seq % 2 == 1 {
            self.park_seq += 1;
            self.ring.park_seq.store(self.park_seq, Ordering::Release);
        }
    }
}

/// Frames published in batches through a ring smaller than the stream arrive in order, each
/// once, with no data race on a slot: publication (release/acquire of `tail`) and release of
/// space (release/acquire of `head`, read through the writer's cache) order every slot access.
/// A full ring makes the writer retry (backpressure, ipc rule 7 of docs/RULES.md), never overwrite.
#[test]
fn frames_arrive_in_order_without_races_through_a_full_ring() {
    loom::model(|| {
        const FRAMES: u64 = 3;
        let ring = Arc::new(Ring::new());
        let mut writer = Writer::new(ring.clone());
        let producer = thread::spawn(move || {
            let mut next = 1;
            while next <= FRAMES {
                // A batch: as many frames as fit, one publication.
                while next <= FRAMES && writer.write(next) {
                    next += 1;
                }
                writer.publish();
                if next <= FRAMES {
                    thread::yield_now();
                }
            }
        });
        let mut reader = Reader::new(ring);
        let mut got = Vec::new();
        while (got.len() as u64) < FRAMES {
            reader.drain(&mut got);
            if (got.len() as u64) < FRAMES {
                thread::yield_now();
            }
        }
        producer.join().unwrap();
        assert_eq!(got, (1..=FRAMES).collect::<Vec<_>>());
    });
}

/// The park handshake loses no wake-up (ipc rule 5 of docs/RULES.md): if the reader goes to sleep
/// after parking and re-checking, the writer's publication saw the park and sends a wake-up; and
/// whatever happens, the published frame is not lost.
#[test]
fn a_parked_reader_is_woken_or_sees_the_frame() {
    loom::model(|| {
        let ring = Arc::new(Ring::new());
        let mut writer = Writer::new(ring.clone());
        let producer = thread::spawn(move || {
            assert!(writer.write(7));
            writer.publish()
        });
        let mut reader = Reader::new(ring);
        let sleeps = reader.park_and_recheck();
        let woken = producer.join().unwrap();
        assert!(
            !sleeps || woken,
            "the reader slept and the writer sent no wake-up"
        );
        // After the wake-up (or without sleeping) the frame is there.
        reader.unpark();
        let mut got = Vec::new();
        reader.drain(&mut got);
        assert_eq!(got, [7]);
    });
}

/// Each park is woken at most once, and a later park is woken again: the writer remembers
/// the park sequence it woke (`last_woken_park`), so a reader that parks twice is not left
/// asleep by a stale memory of the first wake-up.
#[test]
fn every_park_gets_its_own_wake_up() {
    loom::model(|| {
        let ring = Arc::new(Ring::new());
        let mut writer = Writer::new(ring.clone());
        let mut reader = Reader::new(ring.clone());
        // First episode, sequential: park, publish (wakes), drain, unpark.
        assert!(reader.park_and_recheck());
        assert!(writer.write(1));
        assert!(writer.publish(), "first park woken");
        let mut got = Vec::new();
        reader.unpark();
        reader.drain(&mut got);
        // Second episode, concurrent.
        let producer = thread::spawn(move || {
            assert!(writer.write(2));
            writer.publish()
        });
        let sleeps = reader.park_and_recheck();
        let woken = producer.join().unwrap();
        assert!(!sleeps || woken, "second park slept without a wake-up");
        reader.unpark();
        reader.drain(&mut got);
        assert_eq!(got, [1, 2]);
    });
}
