//! The key-value client: typed `get`, `put`, `append` and `delete` on a cluster running the
//! built-in [`KvStateMachine`](crate::kv::KvStateMachine). Against any other state machine use
//! [`Client`] directly with that machine's own command encoding.
//!
//! Every write has [`Client::write`]'s exactly-once rule: after a [`ClientError::Unknown`],
//! calling the same operation again with the same arguments is a retry of that write (same
//! sequence number), applied at most once.

use crate::kv::{KvCommand, KvResult};
use crate::node::client::{Client, ClientConfig, ClientError};
use std::time::Duration;

/// A blocking key-value client with one exactly-once session.
#[derive(Debug)]
pub struct KvClient {
    client: Client,
}

impl KvClient {
    /// Sets up the client's transport; nodes are connected on first use.
    pub fn new(cfg: ClientConfig) -> Result<KvClient, ClientError> {
        Ok(KvClient {
            client: Client::new(cfg)?,
        })
    }

    /// Wraps a generic client (a resumed session, say).
    pub fn from_client(client: Client) -> KvClient {
        KvClient { client }
    }

    /// The generic client underneath (status requests, its session id).
    pub fn client(&mut self) -> &mut Client {
        &mut self.client
    }

    /// Sets `key` to `value`.
    pub fn put(&mut self, key: &[u8], value: &[u8], timeout: Duration) -> Result<(), ClientError> {
        let cmd = KvCommand::Put {
            key: key.to_vec(),
            value: value.to_vec(),
        };
        self.write(cmd, timeout).map(|_| ())
    }

    /// Appends `value` to the value of `key` (an absent key counts as empty).
    pub fn append(
        &mut self,
        key: &[u8],
        value: &[u8],
        timeout: Duration,
    ) -> Result<(), ClientError> {
        let cmd = KvCommand::Append {
            key: key.to_vec(),
            value: value.to_vec(),
        };
        self.write(cmd, timeout).map(|_| ())
    }

    /// Removes `key`.
    pub fn delete(&mut self, key: &[u8], timeout: Duration) -> Result<(), ClientError> {
        self.write(KvCommand::Delete { key: key.to_vec() }, timeout)
            .map(|_| ())
    }

    /// A linearizable get; a key never written reads as empty.
    pub fn get(&mut self, key: &[u8], timeout: Duration) -> Result<Vec<u8>, ClientError> {
        let q = encode(KvCommand::Get { key: key.to_vec() })?;
        let r = self.client.read(&q, timeout)?;
        match decode(&r)? {
            KvResult::Value(v) => Ok(v),
            other => Err(ClientError::Refused(format!("{other:?}"))),
        }
    }

    fn write(&mut self, cmd: KvCommand, timeout: Duration) -> Result<KvResult, ClientError> {
        let r = self.client.write(&encode(cmd)?, timeout)?;
        match decode(&r)? {
            KvResult::Error(e) => Err(ClientError::Refused(e.to_string())),
            ok => Ok(ok),
        }
    }
}

fn encode(cmd: KvCommand) -> Result<Vec<u8>, ClientError> {
    cmd.encode()
        .map_err(|e| ClientError::Refused(format!("key-value command cannot be encoded: {e}")))
}

fn decode(r: &[u8]) -> Result<KvResult, ClientError> {
    KvResult::decode(r).map_err(|e| {
        ClientError::Refused(format!(
            "the cluster's answer is not a key-value result ({e}): does the cluster run the \
             built-in key-value machine?"
        ))
    })
}
