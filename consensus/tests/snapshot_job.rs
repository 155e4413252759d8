//! A snapshot job writes exactly what `snapshot` wrote when the job was captured, even if the
//! state machine changes before the job runs (the node applies entries meanwhile).

use shmraft_consensus::{
    ClientRequest, Index, KvCommand, KvStateMachine, SessionConfig, Sessions, StateMachine,
};

/// A sessions command: the `ClientRequest` envelope (its encoding carries the 0x01 tag).
fn request(client: u64, seq: u64, cmd: KvCommand) -> Vec<u8> {
    ClientRequest {
        client_id: client,
        seq,
        first_unacked_seq: seq,
        log_time_ms: seq,
        command: cmd.encode().unwrap(),
    }
    .encode()
    .unwrap()
}

#[test]
fn a_job_captures_the_state_at_capture_time() {
    let mut sm = Sessions::new(KvStateMachine::new(), SessionConfig::default());
    for i in 1..=100u64 {
        let cmd = KvCommand::Put {
            key: format!("k{}", i % 10).into_bytes(),
            value: format!("v{i}").into_bytes(),
        };
        sm.apply(Index(i), &request(7, i, cmd));
    }
    let mut expected = Vec::new();
    sm.snapshot(&mut expected).unwrap();
    let job = sm
        .snapshot_job()
        .expect("the KV machine offers snapshot jobs");
    // The machine moves on before the job runs.
    sm.apply(
        Index(101),
        &request(
            7,
            101,
            KvCommand::Put {
                key: b"k1".to_vec(),
                value: b"later".to_vec(),
            },
        ),
    );
    let mut got = Vec::new();
    job(&mut got).unwrap();
    assert_eq!(got, expected);
    // And the image restores to the captured state.
    let mut restored = Sessions::new(KvStateMachine::new(), SessionConfig::default());
    restored.restore(&mut got.as_slice()).unwrap();
    let mut again = Vec::new();
    restored.snapshot(&mut again).unwrap();
    assert_eq!(again, expected);
}
