//! The peer network. With a single control node there is nobody to talk to; every RPC
//! reports the target unreachable, which openraft handles by backing off.

use openraft::error::{InstallSnapshotError, RPCError, RaftError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};

use super::{ControlNode, NodeId, TypeConfig};

#[derive(Debug, thiserror::Error)]
#[error("no peer transport to control node {0}")]
struct NoTransport(NodeId);

/// A network with no peers.
#[derive(Clone, Default)]
pub struct Isolated;

pub struct IsolatedClient {
    target: NodeId,
}

impl RaftNetworkFactory<TypeConfig> for Isolated {
    type Network = IsolatedClient;
    async fn new_client(&mut self, target: NodeId, _node: &ControlNode) -> IsolatedClient {
        IsolatedClient { target }
    }
}

impl IsolatedClient {
    fn unreachable<E: std::error::Error>(&self) -> RPCError<NodeId, ControlNode, E> {
        RPCError::Unreachable(Unreachable::new(&NoTransport(self.target)))
    }
}

impl RaftNetwork<TypeConfig> for IsolatedClient {
    async fn append_entries(
        &mut self,
        _rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, ControlNode, RaftError<NodeId>>>
    {
        Err(self.unreachable())
    }

    async fn install_snapshot(
        &mut self,
        _rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, ControlNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        Err(self.unreachable())
    }

    async fn vote(
        &mut self,
        _rpc: VoteRequest<NodeId>,
        _option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, ControlNode, RaftError<NodeId>>> {
        Err(self.unreachable())
    }
}
