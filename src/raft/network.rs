//! The peer transport: Raft RPCs, forwarded writes, read indexes and admin requests
//! between control nodes (port 4525).
//!
//! HTTPS/1.1 with mutual TLS: both sides present control-service certificates of the same
//! cluster (checked in the handshake, see [`crate::tls`]). Bodies are bincode 2 (see
//! [`crate::storage::encode`]). Every request names the Raft id it is meant for in
//! [`TARGET_HEADER`]; a node refuses requests for another id, so a stale address can never
//! deliver one node's messages to another (a classic source of split brain).
//!
//! Errors map onto openraft's expectations: a connection that cannot be made is
//! `Unreachable` (openraft backs off), a request that failed in flight is `Network`, a
//! deadline is `Timeout`, and an error the peer's Raft returned is `RemoteError`. Each
//! call has its own deadline (openraft's `hard_ttl`), so a slow or dead peer only delays
//! the replication stream to that peer.

use std::io::Cursor;
use std::time::Duration;

use openraft::error::{
    Fatal, InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, ReplicationClosed,
    StreamingError, Timeout, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    SnapshotResponse, VoteRequest, VoteResponse,
};
use openraft::{Snapshot, SnapshotMeta, Vote};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::{ControlNode, NodeId, TypeConfig};
use crate::storage;
use crate::tls::{self, TlsFiles};

pub const TARGET_HEADER: &str = "x-flocker-raft-target";
pub const PATH_APPEND: &str = "/raft/v1/append";
pub const PATH_VOTE: &str = "/raft/v1/vote";
pub const PATH_SNAPSHOT: &str = "/raft/v1/snapshot";
pub const PATH_WRITE: &str = "/raft/v1/write";
pub const PATH_READ_INDEX: &str = "/raft/v1/read-index";
pub const PATH_ADMIN: &str = "/raft/v1/admin";

/// A failure talking to a peer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PeerError {
    /// No connection could be made: the request was certainly not delivered.
    #[error("peer unreachable: {0}")]
    Unreachable(String),
    /// The request may have been delivered; its effect is unknown.
    #[error("peer request failed: {0}")]
    Network(String),
    #[error("peer request timed out")]
    Timeout,
    /// The peer answered with an HTTP error (wrong target, malformed request).
    #[error("peer refused the request: {0}")]
    Refused(String),
}

/// Errors carried back to a forwarding node, mirroring
/// [`ConsensusError`](super::node::ConsensusError).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum WireError {
    NotLeader(Option<(NodeId, ControlNode)>),
    Unavailable(String),
    Indeterminate(String),
    Stopped(String),
    Invalid(String),
}

/// An HTTPS client for peer requests (cheap to clone; connections are pooled).
#[derive(Clone)]
pub struct PeerHttp {
    http: reqwest::Client,
}

impl PeerHttp {
    pub fn new(files: &TlsFiles) -> Result<Self, tls::TlsError> {
        let config = (*tls::client_config(files)?).clone();
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(config)
            .connect_timeout(Duration::from_secs(1))
            .pool_idle_timeout(Duration::from_secs(60))
            .tcp_nodelay(true)
            .build()
            .map_err(|e| tls::TlsError::Config(e.to_string()))?;
        Ok(PeerHttp { http })
    }

    /// POST `request` to `path` on the peer `target` at `addr`, bincode both ways.
    pub async fn call<Req, Resp>(
        &self,
        target: NodeId,
        addr: &str,
        path: &str,
        request: &Req,
        timeout: Duration,
    ) -> Result<Resp, PeerError>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
    {
        let body = storage::encode(request).map_err(|e| PeerError::Refused(e.to_string()))?;
        let send = self
            .http
            .post(format!("https://{addr}{path}"))
            .header(TARGET_HEADER, target.to_string())
            .timeout(timeout)
            .body(body)
            .send();
        let response = send.await.map_err(classify)?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(classify)?;
        if !status.is_success() {
            return Err(PeerError::Refused(format!(
                "{status}: {}",
                String::from_utf8_lossy(&bytes)
            )));
        }
        storage::decode(&bytes).map_err(|e| PeerError::Network(format!("bad reply: {e}")))
    }
}

fn classify(e: reqwest::Error) -> PeerError {
    if e.is_timeout() {
        PeerError::Timeout
    } else if e.is_connect() {
        PeerError::Unreachable(e.to_string())
    } else {
        PeerError::Network(e.to_string())
    }
}

/// openraft's network factory over [`PeerHttp`].
#[derive(Clone)]
pub struct PeerNetwork {
    pub http: PeerHttp,
}

pub struct PeerClient {
    http: PeerHttp,
    target: NodeId,
    node: ControlNode,
}

impl RaftNetworkFactory<TypeConfig> for PeerNetwork {
    type Network = PeerClient;
    async fn new_client(&mut self, target: NodeId, node: &ControlNode) -> PeerClient {
        PeerClient {
            http: self.http.clone(),
            target,
            node: node.clone(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Text(String);

impl PeerClient {
    async fn rpc<Req, Resp, E>(
        &self,
        path: &str,
        request: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<NodeId, ControlNode, RaftError<NodeId, E>>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let ttl = option.hard_ttl();
        let result: Result<Result<Resp, RaftError<NodeId, E>>, PeerError> = self
            .http
            .call(self.target, &self.node.raft_addr, path, request, ttl)
            .await;
        match result {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(remote)) => Err(RPCError::RemoteError(RemoteError::new_with_node(
                self.target,
                self.node.clone(),
                remote,
            ))),
            Err(e) => Err(self.rpc_error(e, ttl)),
        }
    }

    fn rpc_error<E: std::error::Error>(
        &self,
        e: PeerError,
        ttl: Duration,
    ) -> RPCError<NodeId, ControlNode, E> {
        match e {
            PeerError::Unreachable(text) => RPCError::Unreachable(Unreachable::new(&Text(text))),
            PeerError::Timeout => RPCError::Timeout(Timeout {
                action: openraft::RPCTypes::AppendEntries,
                id: 0,
                target: self.target,
                timeout: ttl,
            }),
            PeerError::Network(text) | PeerError::Refused(text) => {
                RPCError::Network(NetworkError::new(&Text(text)))
            }
        }
    }
}

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, ControlNode, RaftError<NodeId>>>
    {
        self.rpc(PATH_APPEND, &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        _rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, ControlNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        // Snapshots travel whole through `full_snapshot`; the chunked path is never used.
        Err(RPCError::Network(NetworkError::new(&Text(
            "chunked snapshots are not supported".into(),
        ))))
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, ControlNode, RaftError<NodeId>>> {
        self.rpc(PATH_VOTE, &rpc, &option).await
    }

    /// The whole snapshot in one request (RAFT-NOTES section 2): no per-chunk timeouts, no
    /// chunk bookkeeping; control-plane snapshots are megabytes, not gigabytes.
    async fn full_snapshot(
        &mut self,
        vote: Vote<NodeId>,
        snapshot: Snapshot<TypeConfig>,
        cancel: impl std::future::Future<Output = ReplicationClosed> + Send + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<NodeId>, StreamingError<TypeConfig, Fatal<NodeId>>> {
        let request: SnapshotRequest = (vote, snapshot.meta, snapshot.snapshot.into_inner());
        let ttl = option.hard_ttl().max(Duration::from_secs(30));
        let call = self
            .http
            .call::<_, Result<SnapshotResponse<NodeId>, Fatal<NodeId>>>(
                self.target,
                &self.node.raft_addr,
                PATH_SNAPSHOT,
                &request,
                ttl,
            );
        let result = tokio::select! {
            result = call => result,
            closed = cancel => return Err(StreamingError::Closed(closed)),
        };
        match result {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(fatal)) => Err(StreamingError::RemoteError(RemoteError::new_with_node(
                self.target,
                self.node.clone(),
                fatal,
            ))),
            Err(PeerError::Unreachable(text)) => {
                Err(StreamingError::Unreachable(Unreachable::new(&Text(text))))
            }
            Err(PeerError::Timeout) => Err(StreamingError::Timeout(Timeout {
                action: openraft::RPCTypes::InstallSnapshot,
                id: 0,
                target: self.target,
                timeout: ttl,
            })),
            Err(PeerError::Network(text) | PeerError::Refused(text)) => {
                Err(StreamingError::Network(NetworkError::new(&Text(text))))
            }
        }
    }
}

/// `(leader vote, snapshot meta, snapshot bytes)`.
pub type SnapshotRequest = (Vote<NodeId>, SnapshotMeta<NodeId, ControlNode>, Vec<u8>);

/// Rebuild a received snapshot for `install_full_snapshot`.
pub fn snapshot_of(meta: SnapshotMeta<NodeId, ControlNode>, data: Vec<u8>) -> Snapshot<TypeConfig> {
    Snapshot {
        meta,
        snapshot: Box::new(Cursor::new(data)),
    }
}
