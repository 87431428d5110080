//! The agent side of the agent protocol ([`crate::agent::protocol`]), with failover.
//!
//! A [`ControlConnection`] knows every configured control node and talks to one at a
//! time, the *current* one. Any transport error or 5xx answer (503: no leader) moves
//! `current` to the next node in the list; callers retry with a [`Backoff`] that grows
//! exponentially up to a cap and is reset by the first success. Since every control node
//! answers from the same replicated state and accepts reports for the leader, which node
//! the agent talks to never matters for correctness.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use reqwest::StatusCode;
use serde::de::DeserializeOwned;
use uuid::Uuid;

use super::config::AgentConfig;
use crate::agent::protocol::{
    BlockDeviceOwner, ClusterView, ReportAccepted, ReportedState, StateReport,
};
use crate::model::DatasetAgentState;
use crate::tls;

#[derive(Debug, thiserror::Error)]
pub enum ConnectionError {
    #[error("TLS setup: {0}")]
    Tls(#[from] tls::TlsError),
    #[error("HTTP client setup: {0}")]
    Setup(String),
    #[error("control node {endpoint} unreachable: {source}")]
    Unreachable {
        endpoint: String,
        source: reqwest::Error,
    },
    #[error("control node {endpoint} answered {status}: {description}")]
    Status {
        endpoint: String,
        status: StatusCode,
        description: String,
    },
    #[error("control node {endpoint} sent an unreadable answer: {detail}")]
    Decode { endpoint: String, detail: String },
}

/// Outcome of a registration in the ownership registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Registration {
    /// Recorded now or before: the volume holds the dataset.
    Accepted,
    /// Another volume holds the dataset: this one must not be used.
    Conflict,
}

/// Exponential backoff: `initial`, doubling, capped at `max`.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Self {
        Backoff {
            initial,
            max,
            next: initial,
        }
    }

    /// The delay to wait now; the following one doubles.
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.next.min(self.max);
        self.next = (self.next * 2).min(self.max);
        delay
    }

    pub fn reset(&mut self) {
        self.next = self.initial;
    }
}

pub struct ControlConnection {
    http: reqwest::Client,
    endpoints: Vec<String>,
    current: AtomicUsize,
    era: Uuid,
    request_timeout: Duration,
}

impl ControlConnection {
    pub fn new(config: &AgentConfig, era: Uuid) -> Result<Self, ConnectionError> {
        let tls = (*tls::client_config(&config.tls)?).clone();
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .connect_timeout(Duration::from_secs(3))
            .pool_idle_timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| ConnectionError::Setup(e.to_string()))?;
        let endpoints: Vec<String> = config
            .control_services
            .iter()
            .map(|c| c.base_url())
            .collect();
        if endpoints.is_empty() {
            return Err(ConnectionError::Setup(
                "no control service configured".into(),
            ));
        }
        Ok(ControlConnection {
            http,
            endpoints,
            current: AtomicUsize::new(0),
            era,
            request_timeout: config.timing.request_timeout,
        })
    }

    pub fn era(&self) -> Uuid {
        self.era
    }

    /// The control node requests go to now.
    pub fn current_endpoint(&self) -> &str {
        &self.endpoints[self.current.load(Ordering::Relaxed) % self.endpoints.len()]
    }

    /// Move on from `index` to the next control node (unless someone already did).
    fn fail_over(&self, index: usize) {
        let next = (index + 1) % self.endpoints.len();
        if self
            .current
            .compare_exchange(index, next, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
            && self.endpoints.len() > 1
        {
            tracing::info!(from = %self.endpoints[index], to = %self.endpoints[next], "failing over to another control node");
        }
    }

    /// Long poll: the view once its generation exceeds `after`, or after `wait`.
    pub async fn cluster_view(
        &self,
        after: Option<u64>,
        wait: Duration,
    ) -> Result<ClusterView, ConnectionError> {
        let mut path = format!("/agent/v1/cluster?wait={}", wait.as_secs().max(1));
        if let Some(after) = after {
            path.push_str(&format!("&after={after}"));
        }
        let timeout = wait + self.request_timeout;
        let (_, view) = self
            .send(reqwest::Method::GET, &path, None, timeout)
            .await?;
        Ok(view)
    }

    /// Report this node's dataset state (`None`: heartbeat). Returns the log index at
    /// which the cluster knows it.
    pub async fn report(&self, state: Option<&DatasetAgentState>) -> Result<u64, ConnectionError> {
        let body = StateReport {
            era: self.era,
            state: ReportedState::Datasets(state.cloned()),
        };
        let body = serde_json::to_vec(&body).map_err(|e| ConnectionError::Setup(e.to_string()))?;
        let (_, accepted): (_, ReportAccepted) = self
            .send(
                reqwest::Method::POST,
                "/agent/v1/state",
                Some(body),
                self.request_timeout,
            )
            .await?;
        Ok(accepted.applied)
    }

    /// Record `volume_id` as the volume holding `dataset_id` (first writer wins).
    pub async fn register_owner(
        &self,
        dataset_id: Uuid,
        volume_id: &str,
    ) -> Result<Registration, ConnectionError> {
        let body = BlockDeviceOwner {
            dataset_id,
            blockdevice_id: volume_id.to_owned(),
        };
        let body = serde_json::to_vec(&body).map_err(|e| ConnectionError::Setup(e.to_string()))?;
        let path = "/agent/v1/blockdevice-owner";
        match self
            .send::<serde_json::Value>(
                reqwest::Method::POST,
                path,
                Some(body),
                self.request_timeout,
            )
            .await
        {
            Ok(_) => Ok(Registration::Accepted),
            Err(ConnectionError::Status { status, .. }) if status == StatusCode::CONFLICT => {
                Ok(Registration::Conflict)
            }
            Err(e) => Err(e),
        }
    }

    pub(crate) async fn send<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Vec<u8>>,
        timeout: Duration,
    ) -> Result<(StatusCode, T), ConnectionError> {
        let index = self.current.load(Ordering::Relaxed) % self.endpoints.len();
        let endpoint = &self.endpoints[index];
        let mut request = self
            .http
            .request(method, format!("{endpoint}{path}"))
            .timeout(timeout);
        if let Some(body) = body {
            request = request
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body);
        }
        let unreachable = |source| ConnectionError::Unreachable {
            endpoint: endpoint.clone(),
            source,
        };
        let result = async {
            let response = request.send().await.map_err(unreachable)?;
            let status = response.status();
            let bytes = response.bytes().await.map_err(unreachable)?;
            if !status.is_success() {
                let description = serde_json::from_slice::<serde_json::Value>(&bytes)
                    .ok()
                    .and_then(|v| v.get("description")?.as_str().map(str::to_owned))
                    .unwrap_or_else(|| String::from_utf8_lossy(&bytes).into_owned());
                return Err(ConnectionError::Status {
                    endpoint: endpoint.clone(),
                    status,
                    description,
                });
            }
            serde_json::from_slice(&bytes)
                .map(|value| (status, value))
                .map_err(|e| ConnectionError::Decode {
                    endpoint: endpoint.clone(),
                    detail: e.to_string(),
                })
        }
        .await;
        let fail_over = match &result {
            Err(ConnectionError::Unreachable { .. } | ConnectionError::Decode { .. }) => true,
            Err(ConnectionError::Status { status, .. }) => status.is_server_error(),
            _ => false,
        };
        if fail_over {
            self.fail_over(index);
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(500));
        let delays: Vec<u128> = (0..5).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(delays, [100, 200, 400, 500, 500]);
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_millis(100));
    }
}
