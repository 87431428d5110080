//! The running agent: the long-poll task, the report task and the convergence loop.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use uuid::Uuid;

use super::backend::{self, Backend, BackendError, Observation};
use super::config::{AgentConfig, Timing};
use super::connection::{Backoff, ConnectionError, ControlConnection};
use super::executor::{Executed, Executor};
use super::planner::{self, Plan, PlanInput};
use crate::agent::protocol::ClusterView;
use crate::model::{Configuration, DatasetAgentState, Micros};
use crate::tls::{self, PeerIdentity, TlsFiles};

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("node certificate {}: {reason}", path.display())]
    Identity { path: PathBuf, reason: String },
    #[error("cannot determine the era (boot id): {0}")]
    Era(String),
    #[error("storage backend: {0}")]
    Backend(#[from] BackendError),
    #[error(transparent)]
    Connection(#[from] ConnectionError),
    #[error("agent setup did not finish: {0}")]
    Interrupted(String),
}

/// What the agent is doing, for tests and operators (see [`DatasetAgent::status`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AgentStatus {
    pub node: Uuid,
    pub era: Uuid,
    pub compute_instance_id: String,
    /// Whether the last exchange with a control node succeeded.
    pub connected: bool,
    /// The generation of the cluster view the last plan was made from.
    pub generation: u64,
    /// Completed iterations (observe, plan, execute).
    pub iterations: u64,
    /// The last plan (empty until connected).
    pub plan: Plan,
    /// The last observed state, as reported.
    pub observed: Option<DatasetAgentState>,
    /// Errors of the last iteration.
    pub errors: Vec<String>,
}

/// A view of the cluster and when it arrived (to advance its clock for leases).
#[derive(Debug)]
pub(crate) struct Received {
    pub(crate) view: ClusterView,
    pub(crate) at: Instant,
}

pub(crate) type Views = Option<Arc<Received>>;

/// A configured dataset agent, ready to [`run`](DatasetAgent::run).
pub struct DatasetAgent {
    timing: Timing,
    node: Uuid,
    backend: Arc<dyn Backend>,
    connection: Arc<ControlConnection>,
    status: watch::Sender<AgentStatus>,
}

/// Run a dataset agent until `shutdown` completes. Local state (mounts, attachments) is
/// left as it is on shutdown.
pub async fn run(
    config: AgentConfig,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), AgentError> {
    let config = Arc::new(config);
    let setup = config.clone();
    let agent = tokio::task::spawn_blocking(move || DatasetAgent::new(&setup))
        .await
        .map_err(|e| AgentError::Interrupted(e.to_string()))??;
    agent.run(shutdown).await
}

/// The node UUID named by the node certificate (`CN=node-<uuid>`).
pub fn node_uuid(files: &TlsFiles) -> Result<Uuid, AgentError> {
    use rustls_pki_types::pem::PemObject;
    let bad = |reason: String| AgentError::Identity {
        path: files.cert.clone(),
        reason,
    };
    let cert = rustls_pki_types::CertificateDer::from_pem_file(&files.cert)
        .map_err(|e| bad(e.to_string()))?;
    match tls::peer_identity(&cert).map_err(|e| bad(e.to_string()))? {
        PeerIdentity::Node(uuid) => Ok(uuid),
        other => Err(bad(format!("not a node certificate ({other:?})"))),
    }
}

/// This boot's id, the default era.
pub fn boot_id() -> Result<Uuid, AgentError> {
    let path = "/proc/sys/kernel/random/boot_id";
    let text =
        std::fs::read_to_string(path).map_err(|e| AgentError::Era(format!("{path}: {e}")))?;
    Uuid::parse_str(text.trim()).map_err(|e| AgentError::Era(format!("{path}: {e}")))
}

impl DatasetAgent {
    /// Check the identity, pick the era and prepare the backend (creating its
    /// directories). Blocking: call it at startup or from `spawn_blocking`.
    pub fn new(config: &AgentConfig) -> Result<Self, AgentError> {
        let node = node_uuid(&config.tls)?;
        let backend = backend::build(&config.backend, node)?;
        Self::with_backend(config, node, backend)
    }

    /// Like [`DatasetAgent::new`] with a backend built elsewhere.
    pub fn with_backend(
        config: &AgentConfig,
        node: Uuid,
        backend: Arc<dyn Backend>,
    ) -> Result<Self, AgentError> {
        let era = match config.era {
            Some(era) => era,
            None => boot_id()?,
        };
        let connection = Arc::new(ControlConnection::new(config, era)?);
        let status = watch::Sender::new(AgentStatus {
            node,
            era,
            compute_instance_id: backend.compute_instance_id().to_owned(),
            ..AgentStatus::default()
        });
        Ok(DatasetAgent {
            timing: config.timing.clone(),
            node,
            backend,
            connection,
            status,
        })
    }

    pub fn node(&self) -> Uuid {
        self.node
    }

    /// Follow what the agent does.
    pub fn status(&self) -> watch::Receiver<AgentStatus> {
        self.status.subscribe()
    }

    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) -> Result<(), AgentError> {
        tracing::info!(
            node = %self.node,
            era = %self.connection.era(),
            backend = self.backend.name(),
            instance = self.backend.compute_instance_id(),
            control = self.connection.current_endpoint(),
            "dataset agent starting"
        );
        let (views_tx, views) = watch::channel::<Views>(None);
        let (connected_tx, connected) = watch::channel(false);
        let (states_tx, states) = watch::channel::<Option<DatasetAgentState>>(None);
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
            executor: Executor::new(self.backend.clone(), self.connection.clone()),
            agent: &self,
            views,
            connected,
            states: states_tx,
            overlay: BTreeMap::new(),
            errors: Backoff::new(Duration::from_millis(100), self.timing.max_error_backoff),
        };
        convergence.run(shutdown).await;
        poller.abort();
        reporter.abort();
        tracing::info!(node = %self.node, "dataset agent stopped");
        Ok(())
    }
}

/// Long-poll the control service forever, publishing each newer view.
pub(crate) async fn poll_views(
    connection: Arc<ControlConnection>,
    node: Uuid,
    views: watch::Sender<Views>,
    connected: watch::Sender<bool>,
    timing: Timing,
) {
    let mut backoff = Backoff::new(Duration::from_millis(100), timing.max_reconnect_backoff);
    let mut older_answers = 0;
    loop {
        let after = views.borrow().as_ref().map(|r| r.view.generation);
        match connection.cluster_view(after, timing.long_poll_wait).await {
            Ok(view) => {
                backoff.reset();
                if view.node_uuid != node {
                    tracing::error!(certificate = %node, control = %view.node_uuid, "the control service names this node differently; following it");
                }
                connected.send_if_modified(|c| !std::mem::replace(c, true));
                let known = after.unwrap_or(0);
                // A lagging control node (after a failover) may answer with an older
                // view: ignore it, unless it insists (the cluster was restored).
                older_answers = if view.generation < known {
                    older_answers + 1
                } else {
                    0
                };
                if after.is_none() || view.generation > known || older_answers >= 3 {
                    older_answers = 0;
                    let at = Instant::now();
                    views.send_replace(Some(Arc::new(Received { view, at })));
                }
            }
            Err(e) => {
                if connected.send_if_modified(|c| std::mem::replace(c, false)) {
                    tracing::warn!(error = %e, "lost the control service; reconnecting");
                } else {
                    tracing::debug!(error = %e, "control service still unreachable");
                }
                tokio::time::sleep(backoff.next_delay()).await;
            }
        }
    }
}

/// Sends the observed state when it changes (or when the cluster lost it), and a
/// heartbeat when nothing was sent for `timing.heartbeat`.
struct Reporter {
    connection: Arc<ControlConnection>,
    node: Uuid,
    heartbeat: Duration,
    /// The last state the cluster acknowledged, and the log index it is known at.
    acked: Option<(DatasetAgentState, u64)>,
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
            acked: None,
            last_sent: None,
            retry_at: None,
            backoff: Backoff::new(Duration::from_millis(200), timing.max_reconnect_backoff),
        }
    }

    async fn run(
        mut self,
        mut states: watch::Receiver<Option<DatasetAgentState>>,
        mut views: watch::Receiver<Views>,
    ) {
        loop {
            let current = states.borrow_and_update().clone();
            if let Some(current) = &current {
                let lost = views.borrow_and_update().as_ref().is_some_and(|r| {
                    cluster_lost(
                        &r.view,
                        self.node,
                        self.connection.era(),
                        current,
                        &self.acked,
                    )
                });
                self.send_if_due(current, lost).await;
            }
            let wake = self.next_wake(current.is_some());
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

    async fn send_if_due(&mut self, current: &DatasetAgentState, lost: bool) {
        if self.retry_at.is_some_and(|at| Instant::now() < at) {
            return;
        }
        let full = lost || self.acked.as_ref().is_none_or(|(s, _)| s != current);
        let heartbeat_due = self.last_sent.is_none_or(|t| t.elapsed() >= self.heartbeat);
        if !full && !heartbeat_due {
            return;
        }
        match self.connection.report(full.then_some(current)).await {
            Ok(index) => {
                if full {
                    tracing::debug!(index, "state reported");
                    self.acked = Some((current.clone(), index));
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

    fn next_wake(&self, has_state: bool) -> Option<Instant> {
        if !has_state {
            return None;
        }
        Some(match (self.retry_at, self.last_sent) {
            (Some(at), _) => at,
            (None, Some(sent)) => sent + self.heartbeat,
            (None, None) => Instant::now(),
        })
    }
}

/// Whether a view recent enough to include our last acknowledged report shows a
/// different state (expired, or forgotten with an era change): then report in full.
fn cluster_lost(
    view: &ClusterView,
    node: Uuid,
    era: Uuid,
    current: &DatasetAgentState,
    acked: &Option<(DatasetAgentState, u64)>,
) -> bool {
    let Some((_, index)) = acked else {
        return false;
    };
    if view.generation < *index {
        return false;
    }
    let known = view
        .state
        .nodes
        .get(&node)
        .and_then(|n| n.datasets.as_ref());
    known != Some(current) || view.state.eras.get(&node) != Some(&era)
}

/// The observe → plan → execute loop.
struct Convergence<'a> {
    agent: &'a DatasetAgent,
    executor: Executor,
    views: watch::Receiver<Views>,
    connected: watch::Receiver<bool>,
    states: watch::Sender<Option<DatasetAgentState>>,
    /// Registrations the control service confirmed but our view may not show yet
    /// (entries never change once written, so this is always safe to add).
    overlay: BTreeMap<Uuid, String>,
    errors: Backoff,
}

/// Wait for a new view, for `delay` (`Duration::MAX`: no timer), or for shutdown; false
/// when the agent should stop (shutdown, or the views ended).
pub(crate) async fn next_round<F: Future<Output = ()>>(
    views: &mut watch::Receiver<Views>,
    delay: Duration,
    shutdown: &mut std::pin::Pin<&mut F>,
) -> bool {
    let sleep = async {
        if delay == Duration::MAX {
            std::future::pending::<()>().await
        } else {
            tokio::time::sleep(delay).await
        }
    };
    tokio::select! {
        () = shutdown.as_mut() => false,
        changed = views.changed() => changed.is_ok(),
        () = sleep => true,
    }
}

impl Convergence<'_> {
    async fn run(&mut self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            let received = self.views.borrow_and_update().clone();
            let delay = match received {
                Some(received) => self.iterate(&received).await,
                // Nothing to act on before the first view.
                None => Duration::MAX,
            };
            if !next_round(&mut self.views, delay, &mut shutdown).await {
                return;
            }
        }
    }

    /// One iteration; returns how long to wait before the next one (unless a new view
    /// arrives first).
    async fn iterate(&mut self, received: &Received) -> Duration {
        let observation = match self.observe().await {
            Ok(observation) => observation,
            Err(error) => return self.failed_iteration(error),
        };
        let view = &received.view;
        let configuration = self.configuration(view);
        let state = planner::observed_state(&observation, &configuration.blockdevice_owners);
        self.states.send_if_modified(|s| {
            let changed = s.as_ref() != Some(&state);
            if changed {
                *s = Some(state.clone());
            }
            changed
        });
        if !*self.connected.borrow() {
            // Without a live view, keep everything as it is.
            self.publish(view.generation, Plan::default(), Some(state), Vec::new());
            return self.agent.timing.waiting_recheck;
        }
        let elapsed = Micros::try_from(received.at.elapsed().as_micros()).unwrap_or(Micros::MAX);
        let plan = planner::plan(&PlanInput {
            node: view.node_uuid,
            now: view.now.saturating_add(elapsed),
            configuration: &configuration,
            cluster: &view.state,
            observation: &observation,
        });
        let errors = self.execute(&plan).await;
        let delay = self.next_delay(&plan, &errors);
        self.publish(view.generation, plan, Some(state), errors);
        delay
    }

    async fn observe(&self) -> Result<Observation, String> {
        let backend = self.agent.backend.clone();
        match tokio::task::spawn_blocking(move || backend.observe()).await {
            Ok(Ok(observation)) => Ok(observation),
            Ok(Err(e)) => Err(format!("observing the backend: {e}")),
            Err(e) => Err(format!("observing the backend: {e}")),
        }
    }

    /// The view's configuration, plus the registrations it does not show yet.
    fn configuration<'v>(&mut self, view: &'v ClusterView) -> Cow<'v, Configuration> {
        let owners = &view.configuration.blockdevice_owners;
        self.overlay.retain(|d, _| !owners.contains_key(d));
        if self.overlay.is_empty() {
            return Cow::Borrowed(&view.configuration);
        }
        let mut c = view.configuration.clone();
        c.blockdevice_owners
            .extend(self.overlay.iter().map(|(d, v)| (*d, v.clone())));
        Cow::Owned(c)
    }

    /// At once after work, with backoff after failures, soon while waiting for another
    /// node, at leisure otherwise.
    fn next_delay(&mut self, plan: &Plan, errors: &[String]) -> Duration {
        let timing = &self.agent.timing;
        if !errors.is_empty() {
            return self.errors.next_delay();
        }
        self.errors.reset();
        if !plan.actions.is_empty() {
            Duration::ZERO
        } else if plan.expects_change() {
            timing.waiting_recheck
        } else {
            timing.idle_recheck
        }
    }

    async fn execute(&mut self, plan: &Plan) -> Vec<String> {
        let mut errors = Vec::new();
        for action in &plan.actions {
            tracing::info!(action = action.name(), dataset = %action.dataset_id(), volume = action.volume_id().unwrap_or("-"), "executing");
            match self.executor.execute(action).await {
                Ok(Executed::Registered { dataset, volume }) => {
                    self.overlay.insert(dataset, volume);
                }
                Ok(Executed::Done) => {}
                Err(e) => {
                    tracing::warn!(action = action.name(), dataset = %action.dataset_id(), error = %e, "action failed; will retry");
                    errors.push(format!("{} {}: {e}", action.name(), action.dataset_id()));
                }
            }
        }
        errors
    }

    fn failed_iteration(&mut self, error: String) -> Duration {
        tracing::warn!(%error, "iteration failed; will retry");
        self.publish_errors(vec![error]);
        self.errors.next_delay()
    }

    fn publish_errors(&self, errors: Vec<String>) {
        self.agent.status.send_modify(|s| {
            s.iterations += 1;
            s.errors = errors;
        });
    }

    fn publish(
        &self,
        generation: u64,
        plan: Plan,
        observed: Option<DatasetAgentState>,
        errors: Vec<String>,
    ) {
        let connected = *self.connected.borrow();
        self.agent.status.send_modify(|s| {
            s.connected = connected;
            s.generation = generation;
            s.iterations += 1;
            s.plan = plan;
            s.observed = observed;
            s.errors = errors;
        });
    }
}
