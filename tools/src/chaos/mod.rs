//! Breaking a cluster on purpose and judging what it did: `shmraft nemesis` (one fault at a
//! time), `shmraft torture` (a workload under random faults, then the checks) and
//! `shmraft check-history` (the linearizability check of a recorded history).

pub mod check_history;
pub mod crashfs_nodes;
pub mod durability;
pub mod nemesis;
pub mod torture;
