//! Transport behaviour with both ends in one process (rings and FIFOs are the real ones).
//! Cross-process behaviour (crashes, restarts, clients) is in `multiprocess.rs`.

use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use shmraft_ipc::{
    Endpoint, HeaderError, Incoming, LinkEvent, OutFrame, RING_DATA_OFFSET, RingHeader, SendError,
    Transport, TransportConfig, ring_file_name,
};

const N1: Endpoint = Endpoint::Node(1);
const N2: Endpoint = Endpoint::Node(2);

fn cfg(dir: &std::path::Path, ring_bytes: usize) -> TransportConfig {
    let mut c = TransportConfig::new(dir.join("rt"), 7);
    c.ring_bytes = ring_bytes;
    c.maintenance_interval_ms = 5;
    c
}

/// Collected output of one `recv`.
#[derive(Default, Debug)]
struct Got {
    frames: Vec<(Endpoint, u16, Vec<u8>)>,
    events: Vec<LinkEvent>,
}

fn recv_all(t: &mut Transport, got: &mut Got) -> usize {
    t.recv(|inc| match inc {
        Incoming::Frame(f) => got.frames.push((f.from, f.kind, f.payload.to_vec())),
        Incoming::Event(e) => got.events.push(e),
    })
}

/// Runs `step` on both transports until `done` holds, with a generous deadline.
fn pump_until(
    a: &mut Transport,
    b: &mut Transport,
    ga: &mut Got,
    gb: &mut Got,
    mut done: impl FnMut(&Got, &Got) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done(ga, gb) {
        assert!(
            Instant::now() < deadline,
            "condition not reached; a={ga:?} b={gb:?}"
        );
        a.maintain();
        b.maintain();
        recv_all(a, ga);
        recv_all(b, gb);
        a.wait(Some(Duration::from_millis(1))).unwrap();
    }
}

fn pair(ring_bytes: usize) -> (tempfile::TempDir, Transport, Transport) {
    let dir = tempfile::tempdir().unwrap();
    let mut a = Transport::node(cfg(dir.path(), ring_bytes), 1, &[1, 2]).unwrap();
    let mut b = Transport::node(cfg(dir.path(), ring_bytes), 2, &[1, 2]).unwrap();
    // b attached to a's ring at start and told a so (an `Attached` wake-up record): a picks
    // that up from its FIFO, opens b's FIFO and attaches b's ring.
    let (mut ga, mut gb) = (Got::default(), Got::default());
    pump_until(&mut a, &mut b, &mut ga, &mut gb, |ga, gb| {
        a_up(ga) && !gb.events.is_empty()
    });
    assert_eq!(a.peers(), vec![(N2, true)]);
    assert_eq!(b.peers(), vec![(N1, true)]);
    (dir, a, b)
}

#[test]
fn frames_arrive_in_order_with_checked_contents() {
    let (_d, mut a, mut b) = pair(1 << 16);
    let (mut ga, mut gb) = (Got::default(), Got::default());
    let mut sent = 0u32;
    let mut expected = Vec::new();
    while sent < 5000 {
        let payload: Vec<u8> = (0..(sent % 300))
            .map(|i| (i as u8) ^ (sent as u8))
            .collect();
        match a.send(N2, (sent % 7) as u16, &payload) {
            Ok(()) => {
                expected.push(((sent % 7) as u16, payload));
                sent += 1;
            }
            Err(SendError::Full { .. }) => {
                recv_all(&mut b, &mut gb);
            }
            Err(e) => panic!("unexpected {e}"),
        }
    }
    pump_until(&mut a, &mut b, &mut ga, &mut gb, |_, gb| {
        gb.frames.len() >= 5000
    });
    let got: Vec<_> = gb
        .frames
        .iter()
        .map(|(f, k, p)| (assert_eq!(*f, N1), (*k, p.clone())).1)
        .collect();
    assert_eq!(got, expected);
}

/// Sends `payloads` as one batch from `a` to N2, draining `b` into `gb` while the ring is
/// full, until it is accepted. Fails if a generous deadline passes or `b` sees a link reset.
fn send_until_accepted(
    a: &mut Transport,
    b: &mut Transport,
    gb: &mut Got,
    payloads: &[(u16, Vec<u8>)],
) -> Result<(), String> {
    let frames: Vec<OutFrame<'_>> = payloads
        .iter()
        .map(|(k, p)| OutFrame {
            kind: *k,
            payload: p,
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match a.send_batch(N2, &frames) {
            Ok(()) => return Ok(()),
            Err(SendError::Full { .. }) => {
                if Instant::now() >= deadline {
                    return Err("refused until the deadline".into());
                }
                recv_all(b, gb);
                recv_all(a, &mut Got::default());
                if has_reset(gb) {
                    return Err(format!("link reset: {:?}", gb.events));
                }
            }
            Err(e) => panic!("unexpected {e}"),
        }
    }
}

fn has_reset(g: &Got) -> bool {
    g.events
        .iter()
        .any(|e| matches!(e, LinkEvent::Reset { .. }))
}

fn a_up(g: &Got) -> bool {
    g.events
        .iter()
        .any(|e| matches!(e, LinkEvent::Up { peer, .. } if *peer == N2))
}

#[test]
fn full_ring_reports_full_then_writable_and_never_overwrites() {
    let (_d, mut a, mut b) = pair(4096);
    let payload = [0xabu8; 200];
    let mut accepted = 0u32;
    loop {
        let mut p = payload;
        p[..4].copy_from_slice(&accepted.to_le_bytes());
        match a.send(N2, 1, &p) {
            Ok(()) => accepted += 1,
            Err(SendError::Full { peer }) => {
                assert_eq!(peer, N2);
                break;
            }
            Err(e) => panic!("{e}"),
        }
        assert!(
            accepted < 1000,
            "a 4 KiB ring cannot hold 1000 frames of 200 B"
        );
    }
    // Still full: nothing was consumed.
    assert_eq!(a.send(N2, 1, &payload), Err(SendError::Full { peer: N2 }));
    let (mut ga, mut gb) = (Got::default(), Got::default());
    recv_all(&mut b, &mut gb);
    let seqs: Vec<u32> = gb
        .frames
        .iter()
        .map(|(_, _, p)| u32::from_le_bytes(p[..4].try_into().unwrap()))
        .collect();
    assert_eq!(
        seqs,
        (0..accepted).collect::<Vec<_>>(),
        "every accepted frame, once, in order"
    );
    pump_until(&mut a, &mut b, &mut ga, &mut gb, |ga, _| {
        ga.events.contains(&LinkEvent::Writable { peer: N2 })
    });
    a.send(N2, 1, &payload).unwrap();
}

#[test]
fn large_messages_are_fragmented_and_reassembled() {
    let (_d, mut a, mut b) = pair(1 << 14);
    let big: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    a.send_batch(
        N2,
        &[
            OutFrame {
                kind: 3,
                payload: b"before",
            },
            OutFrame {
                kind: 9,
                payload: &big,
            },
            OutFrame {
                kind: 4,
                payload: b"after",
            },
        ],
    )
    .unwrap();
    // While the remainder is buffered, further sends are refused, not interleaved.
    assert_eq!(a.send(N2, 1, b"x"), Err(SendError::Full { peer: N2 }));
    let (mut ga, mut gb) = (Got::default(), Got::default());
    pump_until(&mut a, &mut b, &mut ga, &mut gb, |_, gb| {
        gb.frames.len() >= 3
    });
    assert_eq!(gb.frames[0], (N1, 3, b"before".to_vec()));
    assert_eq!(gb.frames[1], (N1, 9, big));
    assert_eq!(gb.frames[2], (N1, 4, b"after".to_vec()));
}

#[test]
fn oversized_unknown_and_down_peers_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = cfg(dir.path(), 4096);
    c.max_message_bytes = 1000;
    let mut a = Transport::node(c, 1, &[1, 2]).unwrap();
    assert_eq!(
        a.send(N2, 1, &[0; 1001]),
        Err(SendError::TooLarge {
            peer: N2,
            bytes: 1001,
            max: 1000
        })
    );
    assert_eq!(
        a.send(Endpoint::Node(5), 1, b"x"),
        Err(SendError::UnknownPeer {
            peer: Endpoint::Node(5)
        })
    );
    // Node 2 never started: its FIFO does not exist.
    assert_eq!(a.send(N2, 1, b"x"), Err(SendError::PeerDown { peer: N2 }));
}

#[test]
fn no_wake_up_syscalls_while_the_receiver_is_awake() {
    let (_d, mut a, mut b) = pair(1 << 16);
    let mut gb = Got::default();
    let base = a.stats().wake_writes;
    for i in 0..1000u32 {
        while a.send(N2, 1, &i.to_le_bytes()).is_err() {
            recv_all(&mut b, &mut gb);
        }
        if i % 10 == 0 {
            recv_all(&mut b, &mut gb);
        }
    }
    recv_all(&mut b, &mut gb);
    assert_eq!(gb.frames.len(), 1000);
    // b never parked, so a never wrote to b's FIFO.
    assert_eq!(a.stats().wake_writes, base);
    // Once b parks, a's next publish wakes it: exactly one write for the park.
    assert!(b.before_poll());
    a.send(N2, 1, b"one").unwrap();
    a.send(N2, 1, b"two").unwrap();
    assert_eq!(a.stats().wake_writes, base + 1);
    b.after_poll();
    recv_all(&mut b, &mut gb);
    assert_eq!(gb.frames.len(), 1002);
}

#[test]
fn blocked_links_drop_both_ways() {
    let (_d, mut a, mut b) = pair(1 << 14);
    a.set_blocked(N2, true);
    a.send(N2, 1, b"dropped").unwrap();
    let mut gb = Got::default();
    recv_all(&mut b, &mut gb);
    assert!(gb.frames.is_empty());
    b.send(N1, 1, b"also dropped").unwrap();
    let mut ga = Got::default();
    recv_all(&mut a, &mut ga);
    assert!(ga.frames.is_empty());
    a.set_blocked(N2, false);
    a.send(N2, 1, b"through").unwrap();
    recv_all(&mut b, &mut gb);
    assert_eq!(gb.frames, vec![(N1, 1, b"through".to_vec())]);
    assert_eq!(a.stats().dropped_blocked, 2);
}

#[test]
fn a_ring_from_another_cluster_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let mut other = cfg(dir.path(), 4096);
    other.cluster_id = 99;
    let _b = Transport::node(other, 2, &[1, 2]).unwrap();
    let mut a = Transport::node(cfg(dir.path(), 4096), 1, &[1, 2]).unwrap();
    let mut ga = Got::default();
    recv_all(&mut a, &mut ga);
    assert!(
        ga.events.iter().any(|e| matches!(
            e,
            LinkEvent::Rejected { peer, reason: HeaderError::WrongCluster { found: 99, expected: 7 } } if *peer == N2
        )),
        "{ga:?}"
    );
    assert_eq!(a.stats().rejected, 1);
}

#[test]
fn garbage_published_into_a_ring_resets_the_link_without_panic() {
    let (d, mut a, mut b) = pair(4096);
    a.send(N2, 1, b"good").unwrap();
    let mut gb = Got::default();
    recv_all(&mut b, &mut gb);
    assert_eq!(gb.frames.len(), 1);
    // A stray process scribbles a frame-sized blob after the tail and publishes it.
    let path = d.path().join("rt").join(ring_file_name(N1, N2));
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    let mut tail = [0u8; 8];
    f.read_exact_at(&mut tail, 128).unwrap();
    let tail = u64::from_le_bytes(tail);
    f.write_all_at(&[0x5a; 64], RING_DATA_OFFSET as u64 + (tail % 4096))
        .unwrap();
    f.write_all_at(&(tail + 64).to_le_bytes(), 128).unwrap();
    recv_all(&mut b, &mut gb);
    assert_eq!(gb.frames.len(), 1, "garbage must not be delivered");
    assert!(
        gb.events
            .iter()
            .any(|e| matches!(e, LinkEvent::Reset { peer, .. } if *peer == N1))
    );
    // The writer's real tail is now behind the reader's head: the reader flags the ring broken,
    // the writer recreates it, the reader re-attaches, and traffic flows again.
    let mut ga = Got::default();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut n = 0u32;
    while !gb.frames.iter().any(|(_, k, _)| *k == 2) {
        assert!(Instant::now() < deadline, "link never recovered: {gb:?}");
        let _ = a.send(N2, 2, &n.to_le_bytes());
        n += 1;
        a.maintain();
        b.maintain();
        recv_all(&mut a, &mut ga);
        recv_all(&mut b, &mut gb);
        a.wait(Some(Duration::from_millis(1))).unwrap();
    }
    assert!(gb.frames.iter().all(|(_, k, _)| *k == 1 || *k == 2));
}

#[test]
fn garbage_on_the_wake_fifo_is_logged_and_discarded() {
    let (d, mut a, mut b) = pair(4096);
    let fifo = d.path().join("rt").join(shmraft_ipc::fifo_file_name(N2));
    let mut w = std::fs::OpenOptions::new().write(true).open(&fifo).unwrap();
    std::io::Write::write_all(&mut w, b"not a wake-up record!").unwrap();
    assert!(b.before_poll());
    b.after_poll();
    assert_eq!(b.stats().resets, 1);
    a.send(N2, 1, b"still fine").unwrap();
    let mut gb = Got::default();
    recv_all(&mut b, &mut gb);
    assert_eq!(gb.frames, vec![(N1, 1, b"still fine".to_vec())]);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Arbitrary bytes in a ring's data area and index words never panic the reader and never
    /// come out as frames (fault-matrix row C10 of docs/FAULTS.md).
    #[test]
    fn random_ring_contents_never_panic_or_deliver(
        data in proptest::collection::vec(any::<u8>(), 0..600),
        at in 0u64..4096,
        tail_delta in any::<u64>(),
    ) {
        let (d, _a, mut b) = pair(4096);
        let path = d.path().join("rt").join(ring_file_name(N1, N2));
        let f = std::fs::OpenOptions::new().read(true).write(true).open(&path).unwrap();
        let off = at.min(4096 - data.len() as u64);
        f.write_all_at(&data, RING_DATA_OFFSET as u64 + off).unwrap();
        f.write_all_at(&(tail_delta % 8192).to_le_bytes(), 128).unwrap();
        let mut gb = Got::default();
        recv_all(&mut b, &mut gb);
        recv_all(&mut b, &mut gb);
        prop_assert!(gb.frames.is_empty());
    }

    /// Batches of frames of mixed sizes (empty, small, either side of the CRC-32 threshold,
    /// fragmented) through a small ring, drained at random points: every accepted frame
    /// arrives once, in order, intact; a refused batch delivers nothing. Covers the batch
    /// write path and the reader's fast path across padding at the wrap, drain-chunk edges
    /// and refusals.
    #[test]
    fn mixed_batches_arrive_exactly_once_in_order(
        batches in proptest::collection::vec(
            (proptest::collection::vec(prop_oneof![0usize..80, 480usize..560, 3000usize..9000], 1..12), any::<bool>()),
            1..40,
        ),
        ring_log in 12u32..19,
    ) {
        let (_d, mut a, mut b) = pair(1 << ring_log);
        let mut gb = Got::default();
        let mut expected: Vec<(u16, Vec<u8>)> = Vec::new();
        let mut n = 0u32;
        for (sizes, drain_first) in batches {
            if drain_first {
                recv_all(&mut b, &mut gb);
                prop_assert!(!has_reset(&gb), "{:?}", gb.events);
            }
            let payloads: Vec<(u16, Vec<u8>)> = sizes
                .iter()
                .map(|&len| {
                    n += 1;
                    ((n % 5) as u16, (0..len).map(|i| (i as u32 ^ n.wrapping_mul(31)) as u8).collect())
                })
                .collect();
            let sent = send_until_accepted(&mut a, &mut b, &mut gb, &payloads);
            prop_assert!(sent.is_ok(), "{:?}", sent);
            expected.extend(payloads);
        }
        let mut ga = Got::default();
        pump_until(&mut a, &mut b, &mut ga, &mut gb, |_, gb| {
            gb.frames.len() >= expected.len() || has_reset(gb)
        });
        prop_assert!(!has_reset(&gb), "{:?}", gb.events);
        let got: Vec<(u16, Vec<u8>)> = gb.frames.iter().map(|(_, k, p)| (*k, p.clone())).collect();
        prop_assert_eq!(got.len(), expected.len());
        prop_assert!(got == expected, "frames differ from what was sent");
    }

    /// The ring header decoder accepts exactly what the encoder produces and never panics.
    #[test]
    fn header_decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = RingHeader::decode(&bytes);
    }

    #[test]
    fn header_round_trips(cap_log in 12u32..30, cluster in any::<u64>(), pid in 1u32..1_000_000, epoch in 1u64.., id in any::<u32>()) {
        let h = RingHeader {
            capacity: 1 << cap_log,
            cluster_id: cluster,
            from: Endpoint::Node(id),
            to: Endpoint::Client(id ^ 1),
            writer_pid: pid,
            writer_epoch: epoch,
            created_unix_ns: 5,
        };
        prop_assert_eq!(RingHeader::decode(&h.encode()), Ok(h));
        let mut bad = h.encode();
        bad[20] ^= 1;
        prop_assert!(RingHeader::decode(&bad).is_err());
    }
}

/// Runs the node's loop while `client_step` returns `None`.
/// The node echoes every frame and collects its events.
fn serve<T>(
    node: &mut Transport,
    mut client_step: impl FnMut(&mut Transport, &[LinkEvent]) -> Option<T>,
) -> T {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut events = Vec::new();
    loop {
        node.maintain();
        let mut echo = Vec::new();
        node.recv(|inc| match inc {
            Incoming::Frame(f) => echo.push((f.from, f.kind, f.payload.to_vec())),
            Incoming::Event(e) => events.push(e),
        });
        for (to, kind, p) in echo {
            node.send(to, kind, &p).unwrap();
        }
        if let Some(v) = client_step(node, &events) {
            return v;
        }
        assert!(Instant::now() < deadline, "no progress");
    }
}

#[test]
fn a_client_connects_talks_and_leaves_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = Transport::node(cfg(dir.path(), 1 << 14), 1, &[1]).unwrap();
    let mut client = Transport::client(cfg(dir.path(), 1 << 14)).unwrap();
    let me = client.me();
    // connect() blocks until the node answers, so run it on a thread while the node serves.
    let h = std::thread::spawn(move || {
        client.connect(1, Duration::from_secs(20)).unwrap();
        client
    });
    serve(&mut node, |_, _| h.is_finished().then_some(()));
    let mut client = h.join().unwrap();
    client.send(N1, 4, b"ping").unwrap();
    let mut got = Got::default();
    serve(&mut node, |_, _| {
        recv_all(&mut client, &mut got);
        (!got.frames.is_empty()).then_some(())
    });
    assert_eq!(got.frames, vec![(N1, 4, b"ping".to_vec())]);
    let rt = dir.path().join("rt");
    drop(client);
    serve(&mut node, |_, events| {
        events.contains(&LinkEvent::Down { peer: me }).then_some(())
    });
    assert_eq!(node.peers(), vec![]);
    let left: Vec<_> = std::fs::read_dir(&rt)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        left,
        vec![std::ffi::OsString::from(shmraft_ipc::fifo_file_name(N1))]
    );
}

#[test]
fn clients_of_another_cluster_and_beyond_max_clients_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = cfg(dir.path(), 4096);
    c.max_clients = 1;
    let mut node = Transport::node(c, 1, &[1]).unwrap();
    let connect = |cluster: u64| {
        let mut c = cfg(dir.path(), 4096);
        c.cluster_id = cluster;
        let mut client = Transport::client(c).unwrap();
        std::thread::spawn(move || {
            let r = client.connect(1, Duration::from_secs(20));
            (r, client)
        })
    };
    let stranger = connect(99);
    serve(&mut node, |_, _| stranger.is_finished().then_some(()));
    let (r, _s) = stranger.join().unwrap();
    assert!(
        matches!(r, Err(shmraft_ipc::ConnectError::Rejected { node: 1 })),
        "{r:?}"
    );
    assert_eq!(node.stats().rejected, 1);
    let first = connect(7);
    serve(&mut node, |_, _| first.is_finished().then_some(()));
    let (r1, _c1) = first.join().unwrap();
    r1.unwrap();
    let second = connect(7);
    serve(&mut node, |_, _| second.is_finished().then_some(()));
    let (r2, _c2) = second.join().unwrap();
    assert!(
        matches!(r2, Err(shmraft_ipc::ConnectError::Rejected { node: 1 })),
        "{r2:?}"
    );
}

/// A parked receiver woken by a frame pays one epoll_wait(2) and leaves the wake-up record
/// unread (the ring is the data): its FIFO is read at most once per eight such wake-ups, and
/// every frame still arrives, in order (ipc rule 5 of docs/RULES.md; `Transport::wait`).
#[test]
fn a_parked_receiver_wakes_without_reading_its_fifo_each_time() {
    let (_d, mut a, mut b) = pair(1 << 16);
    let edge = b.edge_triggered_wait();
    const ROUNDS: u32 = 200;
    let echo = std::thread::spawn(move || {
        let before = b.stats();
        let mut next = 0u32;
        let deadline = Instant::now() + Duration::from_secs(60);
        while next < ROUNDS {
            assert!(Instant::now() < deadline, "echo stalled at {next}");
            b.wait(Some(Duration::from_millis(100))).unwrap();
            let mut got = Vec::new();
            b.recv(|inc| {
                if let Incoming::Frame(f) = inc {
                    got.push(u32::from_le_bytes(f.payload.try_into().unwrap()));
                }
            });
            for seq in got {
                assert_eq!(seq, next, "frames in order");
                next += 1;
                b.send(N1, 2, &seq.to_le_bytes()).unwrap();
            }
        }
        let after = b.stats();
        (
            after.polls - before.polls,
            after.wake_reads - before.wake_reads,
        )
    });
    let woken_before = a.stats().wake_writes;
    for i in 0..ROUNDS {
        a.send(N2, 1, &i.to_le_bytes()).unwrap();
        let mut pong = None;
        let deadline = Instant::now() + Duration::from_secs(60);
        while pong.is_none() {
            assert!(Instant::now() < deadline, "no pong for {i}");
            a.wait(Some(Duration::from_millis(100))).unwrap();
            a.recv(|inc| {
                if let Incoming::Frame(f) = inc {
                    pong = Some(u32::from_le_bytes(f.payload.try_into().unwrap()));
                }
            });
        }
        assert_eq!(pong, Some(i));
    }
    let (b_waits, b_reads) = echo.join().unwrap();
    // Every wake-up record a wrote woke b out of an epoll wait with a frame in the ring.
    let wakes = a.stats().wake_writes - woken_before;
    assert!(
        wakes > 0 && b_waits >= wakes,
        "wakes {wakes}, b's waits {b_waits}"
    );
    // Reads: one per eight data wake-ups, plus those after timeouts (a slow machine). On a
    // kernel without edges for writes to a non-empty pipe, one per wake-up instead.
    let timeouts = b_waits - wakes;
    if edge {
        assert!(
            b_reads <= wakes / 8 + timeouts + 2,
            "b read its FIFO {b_reads} times for {wakes} wake-ups and {timeouts} timeouts"
        );
    } else {
        assert!(b_reads >= wakes, "level-triggered: a drain per wake-up");
    }
}

/// A control record (a client's connect request) that reaches a node together with data
/// wake-ups is still acted on: the FIFO is drained every few wake-ups even while every
/// wake-up finds ring data.
#[test]
fn a_connect_request_among_data_wake_ups_is_accepted() {
    let (d, mut a, mut b) = pair(1 << 16);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop_b = stop.clone();
    let node = std::thread::spawn(move || {
        let mut clients = 0;
        while !stop_b.load(std::sync::atomic::Ordering::Relaxed) {
            b.wait(Some(Duration::from_millis(100))).unwrap();
            b.recv(|inc| {
                if let Incoming::Event(LinkEvent::Up {
                    peer: Endpoint::Client(_),
                    ..
                }) = inc
                {
                    clients += 1;
                }
            });
        }
        clients
    });
    let mut c = Transport::client(cfg(d.path(), 1 << 16)).unwrap();
    // Keep b waking on data while the client connects.
    let connect = std::thread::spawn(move || {
        let r = c.connect(2, Duration::from_secs(20));
        (r, c)
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    while !connect.is_finished() {
        assert!(Instant::now() < deadline, "connect never finished");
        let _ = a.send(N2, 1, b"busy");
        a.wait(Some(Duration::from_micros(200))).unwrap();
        a.recv(|_| {});
    }
    let (r, _c) = connect.join().unwrap();
    r.unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert_eq!(node.join().unwrap(), 1);
}

/// A batch holding a large message, whose first small frame does not fit after the previous
/// message's buffered remainder was pushed out, is refused with `Full` without losing that
/// remainder: the earlier message still arrives whole, and the refused batch later, with no
/// reset. (Before the fix the rollback went back to the published tail and discarded the
/// remainder's fragments, so the receiver saw a truncated message and reset the link.)
#[test]
fn a_refused_batch_keeps_the_remainder_pushed_out_before_it() {
    let (_d, mut a, mut b) = pair(1 << 14);
    let (mut ga, mut gb) = (Got::default(), Got::default());
    // 4 fragments fill the 16 KiB ring exactly; 4 more (15240 bytes) stay buffered.
    let first: Vec<u8> = (0..31_552u32).map(|i| (i % 251) as u8).collect();
    a.send(N2, 7, &first).unwrap();
    recv_all(&mut b, &mut gb);
    assert!(
        gb.frames.is_empty(),
        "only part of the message was in the ring"
    );
    // This batch first pushes the remainder out (15304 bytes of records), then its 2000-byte
    // frame needs a pad and does not fit: the batch is refused.
    let small = vec![5u8; 2000];
    let second: Vec<u8> = (0..20_000u32).map(|i| (i % 241) as u8).collect();
    let batch = [
        OutFrame {
            kind: 8,
            payload: &small,
        },
        OutFrame {
            kind: 9,
            payload: &second,
        },
    ];
    assert_eq!(a.send_batch(N2, &batch), Err(SendError::Full { peer: N2 }));
    recv_all(&mut b, &mut gb);
    let kinds = |g: &Got| {
        g.frames
            .iter()
            .map(|f| (f.1, f.2.len()))
            .collect::<Vec<_>>()
    };
    assert_eq!(kinds(&gb), [(7, first.len())], "the first message, whole");
    assert!(gb.frames[0].2 == first, "the first message's bytes");
    // The refused batch goes through once there is room.
    let deadline = Instant::now() + Duration::from_secs(20);
    while a.send_batch(N2, &batch).is_err() {
        assert!(Instant::now() < deadline, "batch never accepted");
        recv_all(&mut b, &mut gb);
        a.wait(Some(Duration::from_millis(1))).unwrap();
        recv_all(&mut a, &mut ga);
    }
    pump_until(&mut a, &mut b, &mut ga, &mut gb, |_, gb| {
        gb.frames.len() >= 3
    });
    assert_eq!(
        kinds(&gb),
        [(7, first.len()), (8, small.len()), (9, second.len())]
    );
    assert!(gb.frames[1].2 == small && gb.frames[2].2 == second);
    assert!(
        !gb.events
            .iter()
            .any(|e| matches!(e, LinkEvent::Reset { .. })),
        "no reset: {:?}",
        gb.events
    );
}

/// A `Waker` used from another thread ends a parked `wait` that nothing else would end (no
/// timeout, maintenance a minute away).
#[test]
fn a_waker_from_another_thread_ends_a_parked_wait() {
    let d = tempfile::tempdir().unwrap();
    let mut c = cfg(d.path(), 1 << 16);
    c.maintenance_interval_ms = 60_000;
    c.spin_us = 0;
    let mut t = Transport::node(c, 1, &[1]).unwrap();
    let waker = t.waker().expect("our own FIFO opens for writing");
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let d2 = done.clone();
    let w = waker.clone();
    let th = std::thread::spawn(move || {
        // Wake repeatedly until the waiter reports back: the first wake may land before it
        // parks (then the wait returns at once), either way it returns.
        let deadline = Instant::now() + Duration::from_secs(30);
        while !d2.load(std::sync::atomic::Ordering::SeqCst) {
            assert!(Instant::now() < deadline, "the parked wait never returned");
            w.wake();
            std::thread::sleep(Duration::from_millis(5));
        }
    });
    // Without the waker this returns only at maintenance, a minute from now, after the waking
    // thread gave up (and the join below fails).
    t.wait(None).unwrap();
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    th.join().unwrap();
    // The wake-up records are well-formed: draining them resets nothing.
    t.recv(|_| {});
    assert_eq!(t.stats().resets, 0, "{:?}", t.stats());
}

/// Regression (found by `mixed_batches_arrive_exactly_once_in_order`): small frames ahead of a
/// large message whose records plus the pad at the wrap exceed the whole ring were refused with
/// `Full` forever, even with the reader caught up. Now the batch is accepted in part.
#[test]
fn small_frames_ahead_of_a_large_message_never_wedge_the_sender() {
    let (_d, mut a, mut b) = pair(1 << 14);
    let mut gb = Got::default();
    let mut expected: Vec<(u16, Vec<u8>)> = Vec::new();
    // The shrunk input of the failing case: (sizes, drain the reader first).
    let batches: [(&[usize], bool); 9] = [
        (&[4777], false),
        (&[49, 513, 513, 6249, 4065, 7609, 513], false),
        (&[4065, 3089], false),
        (&[5177, 529, 3361, 3425, 5401, 8781, 5415], false),
        (&[3224, 70], true),
        (&[4223, 3001, 5035], false),
        (&[75, 7, 547, 3565], true),
        (&[3139, 55, 486, 50, 7, 556, 6], true),
        (
            &[515, 3395, 488, 3565, 525, 53, 530, 3933, 7961, 7178, 5762],
            false,
        ),
    ];
    for (bi, (sizes, drain_first)) in batches.iter().enumerate() {
        if *drain_first {
            recv_all(&mut b, &mut gb);
        }
        let payloads: Vec<(u16, Vec<u8>)> = sizes
            .iter()
            .enumerate()
            .map(|(i, &len)| (i as u16, vec![(bi * 16 + i) as u8; len]))
            .collect();
        if let Err(e) = send_until_accepted(&mut a, &mut b, &mut gb, &payloads) {
            panic!("batch {bi}: {e}");
        }
        expected.extend(payloads);
    }
    let mut ga = Got::default();
    pump_until(&mut a, &mut b, &mut ga, &mut gb, |_, gb| {
        gb.frames.len() >= expected.len()
    });
    let got: Vec<(u16, Vec<u8>)> = gb.frames.iter().map(|(_, k, p)| (*k, p.clone())).collect();
    assert!(got == expected, "frames differ from what was sent");
    assert!(!has_reset(&gb), "{:?}", gb.events);
}
