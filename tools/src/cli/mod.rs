//! Running and using a cluster: `shmraft cluster` (the supervisor), `shmraft node` (one node
//! process), `shmraft kv` and `shmraft status` (clients of a running cluster), and the cluster
//! directory's layout they share.

pub mod cluster;
pub mod cluster_file;
pub mod kv;
pub mod node;
pub mod status;
