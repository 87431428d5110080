//! The running container agent: the dataset agent's long-poll task, a report task and
//! the convergence loop (observe the engine, report, plan, execute).

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use uuid::Uuid;

use super::config::ContainerAgentConfig;
use super::docker::{DockerEngine, EngineError};
use super::planner::{self, Action, EngineContainer, Plan, PlanInput};
use crate::agent::dataset::config::Timing;
use crate::agent::dataset::connection::{Backoff, ConnectionError, ControlConnection};
use crate::agent::dataset::runner::{
    boot_id, next_round, node_uuid, poll_views, AgentError, Received, Views,
};
use crate::agent::protocol::{ClusterView, ReportAccepted, ReportedState, StateReport};
use crate::model::ContainerState;

/// What the agent is doing, for tests and operators (see [`ContainerAgent::status`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerAgentStatus {
    pub node: Uuid,
    pub era: Uuid,
    /// Whether the last exchange with a control node succeeded.
    pub connected: bool,
    /// Whether the last call to the Docker engine succeeded.
    pub engine_reachable: bool,
    /// The generation of the cluster view the last plan was made from.
    pub generation: u64,
    /// Completed iterations.
    pub iterations: u64,
    pub plan: Plan,
    /// The last observed state, as reported (`None` while the engine is unreachable).
    pub observed: Option<Vec<ContainerState>>,
    pub errors: Vec<String>,
}

/// A configured container agent, ready to [`run`](ContainerAgent::run).
pub struct ContainerAgent {
    timing: Timing,
    node: Uuid,
    publish_address: String,
    engine: Arc<DockerEngine>,
    connection: Arc<ControlConnection>,
    status: watch::Sender<ContainerAgentStatus>,
}

/// Run a container agent until `shutdown` completes. Containers are left running.
pub async fn run(
    config: ContainerAgentConfig,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), AgentError> {
    ContainerAgent::new(&config)?.run(shutdown).await
}

impl ContainerAgent {
    /// Check the identity and pick the era (the same rules, so the same era, as the
    /// dataset agent of the node). The engine is contacted only once running.
    pub fn new(config: &ContainerAgentConfig) -> Result<Self, AgentError> {
        let node = node_uuid(&config.agent.tls)?;
        let era = match config.agent.era {
            Some(era) => era,
            None => boot_id()?,
        };
        let connection = Arc::new(ControlConnection::new(&config.agent, era)?);
        Ok(ContainerAgent {
            timing: config.agent.timing.clone(),
            node,
            publish_address: config.publish_address.clone(),
            engine: Arc::new(DockerEngine::new(&config.docker_host)),
            connection,
            status: watch::Sender::new(ContainerAgentStatus {
                node,
                era,
                ..ContainerAgentStatus::default()
            }),
        })
    }

    pub fn node(&self) -> Uuid {
        self.node
    }

    pub fn status(&self) -> watch::Receiver<ContainerAgentStatus> {
        self.status.subscribe()
    }

    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) -> Result<(), AgentError> {
        tracing::info!(
            node = %self.node,
            era = %self.connection.era(),
            engine = self.engine.host(),
            control = self.connection.current_endpoint(),
            "container agent starting"
        );
        let (views_tx, views) = watch::channel::<Views>(None);
        let (connected_tx, connected) = watch::channel(false);
        let (states_tx, states) = watch::channel::<Option<Vec<ContainerState>>>(None);
        let poller = tokio::spawn(poll_views(
            self.connection.clone(),
            self.node,
            views_tx,
            connected_tx,
            self.timing.clone(),
        ));
        let reporter = tokio::spawn(
            Reporter::new(self.connection.clone(), self.node, &self.timing)
                .run(states, views.clone()),
        );
        let mut convergence = Convergence {
            agent: &self,
            views,
            connected,
            states: states_tx,
            agent_restarts: BTreeMap::new(),
            errors: Backoff::new(Duration::from_millis(100), self.timing.max_error_backoff),
            engine_errors: Backoff::new(Duration::from_millis(100), Duration::from_secs(1)),
        };
        convergence.run(shutdown).await;
        poller.abort();
        reporter.abort();
        tracing::info!(node = %self.node, "container agent stopped");
        Ok(())
    }
}

async fn report(
    connection: &ControlConnection,
    state: Option<&[ContainerState]>,
    timeout: Duration,
) -> Result<u64, ConnectionError> {
    let body = StateReport {
        era: connection.era(),
        state: ReportedState::Containers(state.map(<[ContainerState]>::to_vec)),
    };
    let body = serde_json::to_vec(&body).map_err(|e| ConnectionError::Setup(e.to_string()))?;
    let (_, accepted): (_, ReportAccepted) = connection
        .send(
            reqwest::Method::POST,
            "/agent/v1/state",
            Some(body),
            timeout,
        )
        .await?;
    Ok(accepted.applied)
}

/// Sends the observed containers when they change (or when the cluster lost them), and
/// a heartbeat when nothing was sent for `timing.heartbeat`. While the engine is
/// unreachable there is nothing true to say: it sends nothing, so the node's container
/// state expires if the outage lasts.
struct Reporter {
    connection: Arc<ControlConnection>,
    node: Uuid,
    heartbeat: Duration,
    timeout: Duration,
    acked: Option<(Vec<ContainerState>, u64)>,
    last_sent: Option<Instant>,
    retry_at: Option<Instant>,
    backoff: Backoff,
}

impl Reporter {
    fn new(connection: Arc<ControlConnection>, node: Uuid, timing: &Timing) -> Self {
        Reporter {
            connection,
            node,
            heartbeat: timing.heartbeat,
            timeout: timing.request_timeout,
            acked: None,
            last_sent: None,
            retry_at: None,
            backoff: Backoff::new(Duration::from_millis(200), timing.max_reconnect_backoff),
        }
    }

    async fn run(
        mut self,
        mut states: watch::Receiver<Option<Vec<ContainerState>>>,
        mut views: watch::Receiver<Views>,
    ) {
        loop {
            let current = states.borrow_and_update().clone();
            if let Some(current) = &current {
                let lost = views
                    .borrow_and_update()
                    .as_ref()
                    .is_some_and(|r| self.cluster_lost(&r.view, current));
                self.send_if_due(current, lost).await;
            }
            let wake = match (&current, self.retry_at, self.last_sent) {
                (None, _, _) => None,
                (Some(_), Some(at), _) => Some(at),
                (Some(_), None, Some(sent)) => Some(sent + self.heartbeat),
                (Some(_), None, None) => Some(Instant::now()),
            };
            let sleep = async {
                match wake {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                r = states.changed() => if r.is_err() { return },
                r = views.changed() => if r.is_err() { return },
                () = sleep => {}
            }
        }
    }

    /// A view recent enough to include our last acknowledged report shows something
    /// else (state expiry, an era change): report in full again.
    fn cluster_lost(&self, view: &ClusterView, current: &[ContainerState]) -> bool {
        let Some((_, index)) = &self.acked else {
            return false;
        };
        if view.generation < *index {
            return false;
        }
        let known = view
            .state
            .nodes
            .get(&self.node)
            .and_then(|n| n.containers.as_deref());
        known != Some(current) || view.state.eras.get(&self.node) != Some(&self.connection.era())
    }

    async fn send_if_due(&mut self, current: &[ContainerState], lost: bool) {
        if self.retry_at.is_some_and(|at| Instant::now() < at) {
            return;
        }
        let full = lost || self.acked.as_ref().is_none_or(|(s, _)| s != current);
        let heartbeat_due = self.last_sent.is_none_or(|t| t.elapsed() >= self.heartbeat);
        if !full && !heartbeat_due {
            return;
        }
        match report(&self.connection, full.then_some(current), self.timeout).await {
            Ok(index) => {
                if full {
                    tracing::debug!(index, containers = current.len(), "state reported");
                    self.acked = Some((current.to_vec(), index));
                }
                self.last_sent = Some(Instant::now());
                self.retry_at = None;
                self.backoff.reset();
            }
            Err(e) => {
                tracing::warn!(error = %e, "reporting state failed; will retry");
                self.retry_at = Some(Instant::now() + self.backoff.next_delay());
            }
        }
    }
}

/// The observe → report → plan → execute loop.
struct Convergence<'a> {
    agent: &'a ContainerAgent,
    views: watch::Receiver<Views>,
    connected: watch::Receiver<bool>,
    states: watch::Sender<Option<Vec<ContainerState>>>,
    /// Starts this agent made after failures, by container id (`on-failure` maximum).
    agent_restarts: BTreeMap<String, u64>,
    errors: Backoff,
    /// Retrying a local socket is cheap: an engine that comes back is seen within 1 s.
    engine_errors: Backoff,
}

impl Convergence<'_> {
    async fn run(&mut self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            let received = self.views.borrow_and_update().clone();
            let delay = match received {
                Some(received) => self.iterate(&received).await,
                None => Duration::MAX,
            };
            if !next_round(&mut self.views, delay, &mut shutdown).await {
                return;
            }
        }
    }

    async fn iterate(&mut self, received: &Received) -> Duration {
        let engine = match self.agent.engine.observe().await {
            Ok(engine) => engine,
            Err(e) => return self.engine_down(e),
        };
        self.engine_errors.reset();
        let view = &received.view;
        let node = self.agent.node;
        let node_state = view.state.nodes.get(&node);
        let manifestations = node_state
            .and_then(|n| n.datasets.as_ref())
            .map(|d| d.manifestations.as_slice());
        let state = planner::observed_state(node, &engine, manifestations);
        self.states.send_if_modified(|s| {
            let changed = s.as_ref() != Some(&state);
            if changed {
                *s = Some(state.clone());
            }
            changed
        });
        self.agent_restarts
            .retain(|id, _| engine.iter().any(|c| &c.id == id));
        if !*self.connected.borrow() {
            // Without a live view, keep everything as it is.
            self.publish(view.generation, Plan::default(), Some(state), Vec::new());
            return self.agent.timing.waiting_recheck;
        }
        let link_host = node_state.map_or(self.agent.publish_address.as_str(), |n| n.host.as_str());
        let plan = planner::plan(&PlanInput {
            node,
            configuration: &view.configuration,
            manifestations,
            link_host,
            publish_address: &self.agent.publish_address,
            engine: &engine,
            agent_restarts: &self.agent_restarts,
        });
        let errors = self.execute(&plan, &engine).await;
        let delay = self.next_delay(&plan, &errors);
        self.publish(view.generation, plan, Some(state), errors);
        delay
    }

    fn engine_down(&mut self, e: EngineError) -> Duration {
        let was_reachable = {
            let s = self.agent.status.borrow();
            s.engine_reachable || s.iterations == 0
        };
        if was_reachable {
            tracing::warn!(error = %e, "cannot observe the Docker engine; retrying every second");
        } else {
            tracing::debug!(error = %e, "the Docker engine is still unreachable");
        }
        self.states.send_replace(None);
        self.agent.status.send_modify(|s| {
            s.engine_reachable = false;
            s.iterations += 1;
            s.observed = None;
            s.errors = vec![e.to_string()];
        });
        self.engine_errors.next_delay()
    }

    /// Removals first (they free names and ports), then the rest, each group in
    /// parallel as in Flocker.
    async fn execute(&mut self, plan: &Plan, engine: &[EngineContainer]) -> Vec<String> {
        let (removals, others): (Vec<&Action>, Vec<&Action>) = plan
            .actions
            .iter()
            .partition(|a| matches!(a, Action::Remove { .. }));
        let mut errors = Vec::new();
        for group in [removals, others] {
            let results =
                futures::future::join_all(group.iter().map(|a| self.execute_one(a))).await;
            for (action, result) in group.iter().zip(results) {
                match result {
                    Ok(()) => {
                        if let Action::Start {
                            id,
                            engine_restarts,
                            ..
                        } = action
                        {
                            let failed = engine.iter().any(|c| &c.id == id && c.exit_code != 0);
                            if failed {
                                *self.agent_restarts.entry(id.clone()).or_default() +=
                                    1 + engine_restarts;
                            }
                        }
                    }
                    Err(e) => {
                        tracing::warn!(action = action.verb(), container = action.name(), error = %e, "action failed; will retry");
                        errors.push(format!("{} {}: {e}", action.verb(), action.name()));
                    }
                }
            }
        }
        errors
    }

    async fn execute_one(&self, action: &Action) -> Result<(), EngineError> {
        let engine = &self.agent.engine;
        tracing::info!(
            action = action.verb(),
            container = action.name(),
            "executing"
        );
        match action {
            Action::Remove { id, .. } => engine.remove(id).await,
            Action::Create { spec, .. } => engine.create(spec).await,
            Action::Recreate { id, spec, .. } => {
                engine.remove(id).await?;
                engine.create(spec).await
            }
            Action::Start { id, .. } => engine.start(id).await,
        }
    }

    /// At once after creating or removing, with backoff after failures, soon while
    /// waiting (for a dataset, another node, or a restarted container to settle), at
    /// leisure otherwise.
    fn next_delay(&mut self, plan: &Plan, errors: &[String]) -> Duration {
        let timing = &self.agent.timing;
        if !errors.is_empty() {
            return self.errors.next_delay();
        }
        self.errors.reset();
        let structural = plan
            .actions
            .iter()
            .any(|a| !matches!(a, Action::Start { .. }));
        if structural {
            Duration::ZERO
        } else if !plan.actions.is_empty() || !plan.waiting.is_empty() {
            timing.waiting_recheck
        } else {
            timing.idle_recheck
        }
    }

    fn publish(
        &self,
        generation: u64,
        plan: Plan,
        observed: Option<Vec<ContainerState>>,
        errors: Vec<String>,
    ) {
        let connected = *self.connected.borrow();
        self.agent.status.send_modify(|s| {
            s.connected = connected;
            s.engine_reachable = true;
            s.generation = generation;
            s.iterations += 1;
            s.plan = plan;
            s.observed = observed;
            s.errors = errors;
        });
    }
}
