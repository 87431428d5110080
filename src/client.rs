//! A typed REST client for the v1 API, used by `flockerctl`, the agents, tests, benches
//! and the fault-injection suite. It speaks HTTPS with a client certificate and checks
//! the server certificate for the name `control-service`, like Flocker's own clients.

use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::tls::{self, TlsFiles};

/// A raw response: status, headers and the decoded JSON body (`Value::Null` when the body
/// is empty or not JSON).
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
    pub raw: bytes::Bytes,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The `description` of an error body.
    pub fn description(&self) -> Option<&str> {
        self.body.get("description").and_then(Value::as_str)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error("HTTP: {0}")]
    Http(#[from] reqwest::Error),
    #[error("invalid header: {0}")]
    Header(String),
}

/// A client for one control node (`base` is like `https://127.0.0.1:4523`).
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
}

impl Client {
    pub fn new(base: &str, files: &TlsFiles) -> Result<Self, ClientError> {
        Self::with_timeout(base, files, Duration::from_secs(30))
    }

    pub fn with_timeout(
        base: &str,
        files: &TlsFiles,
        timeout: Duration,
    ) -> Result<Self, ClientError> {
        let config = (*tls::client_config(files)?).clone();
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(config)
            .timeout(timeout)
            .pool_idle_timeout(Duration::from_secs(30))
            .build()?;
        Ok(Client {
            http,
            base: base.trim_end_matches('/').to_owned(),
        })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// Send any request; `body` is sent as-is (it need not be valid JSON).
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> Result<Reply, ClientError> {
        let mut request = self.http.request(method, format!("{}{}", self.base, path));
        for (name, value) in headers {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|e| ClientError::Header(e.to_string()))?;
            let value =
                HeaderValue::from_str(value).map_err(|e| ClientError::Header(e.to_string()))?;
            request = request.header(name, value);
        }
        if let Some(body) = body {
            request = request
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body);
        }
        let response = request.send().await?;
        let status = response.status();
        let headers = response.headers().clone();
        let raw = response.bytes().await?;
        let body = serde_json::from_slice(&raw).unwrap_or(Value::Null);
        Ok(Reply {
            status,
            headers,
            body,
            raw,
        })
    }

    pub async fn get(&self, path: &str) -> Result<Reply, ClientError> {
        self.request(Method::GET, path, &[], None).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Result<Reply, ClientError> {
        self.request(Method::POST, path, &[], Some(body.to_string().into_bytes()))
            .await
    }

    /// POST conditional on the configuration tag.
    pub async fn post_if(&self, path: &str, tag: &str, body: &Value) -> Result<Reply, ClientError> {
        let headers = [("X-If-Configuration-Matches", tag)];
        self.request(
            Method::POST,
            path,
            &headers,
            Some(body.to_string().into_bytes()),
        )
        .await
    }

    pub async fn delete(&self, path: &str) -> Result<Reply, ClientError> {
        self.request(Method::DELETE, path, &[], None).await
    }

    /// The datasets and the configuration tag.
    pub async fn datasets(&self) -> Result<(Vec<Value>, String), ClientError> {
        let reply = self.get("/v1/configuration/datasets").await?;
        let tag = reply
            .header("x-configuration-tag")
            .unwrap_or_default()
            .to_owned();
        let list = reply.body.as_array().cloned().unwrap_or_default();
        Ok((list, tag))
    }
}
