//! The one place where failures become HTTP responses.
//!
//! Every error body is Flocker's shape, `{"description": "..."}` (plus `errors` for schema
//! failures). 5xx are reserved for availability (no leader, unknown outcome): no input
//! produces one.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::model::Rejection;
use crate::raft::node::ConsensusError;

pub const UNDECODABLE: &str =
    "The request body could not be decoded according to the value of the\nContent-Type header.";
pub const SCHEMA_MISMATCH: &str = "The provided JSON doesn't match the required schema.";
pub const NOT_FOUND: &str = "The requested URL was not found on the server.  If you entered the URL manually please check your spelling and try again.";
pub const METHOD_NOT_ALLOWED: &str = "The method is not allowed for the requested URL.";

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("undecodable body")]
    Undecodable,
    #[error("schema mismatch: {0:?}")]
    Schema(Vec<String>),
    /// A shape problem the schema does not catch (Flocker answered 500 to most of these).
    #[error("bad request: {0}")]
    BadRequest(String),
    #[error("rejected: {0:?}")]
    Rejected(Rejection),
    /// A request that conflicts with the current state (admin interface).
    #[error("conflict: {0}")]
    Conflict(String),
    /// `X-If-Configuration-Matches` failed: the first raw header value and the current tag.
    #[error("precondition failed")]
    PreconditionFailed { required: String, current: String },
    #[error("not found")]
    RouteNotFound,
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("body too large")]
    TooLarge,
    #[error(transparent)]
    Consensus(#[from] ConsensusError),
}

impl ApiError {
    fn status(&self) -> StatusCode {
        match self {
            ApiError::Undecodable | ApiError::Schema(_) | ApiError::BadRequest(_) => {
                StatusCode::BAD_REQUEST
            }
            ApiError::Rejected(rejection) => rejection_status(rejection),
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::PreconditionFailed { .. } => StatusCode::PRECONDITION_FAILED,
            ApiError::RouteNotFound => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Consensus(ConsensusError::Indeterminate(_)) => StatusCode::GATEWAY_TIMEOUT,
            ApiError::Consensus(ConsensusError::Invalid(_)) => StatusCode::CONFLICT,
            ApiError::Consensus(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn body(&self) -> serde_json::Value {
        let description = match self {
            ApiError::Undecodable => UNDECODABLE.to_owned(),
            ApiError::Schema(errors) => {
                return json!({"description": SCHEMA_MISMATCH, "errors": errors})
            }
            ApiError::BadRequest(text) | ApiError::Conflict(text) => text.clone(),
            ApiError::Rejected(rejection) => rejection.description().to_owned(),
            ApiError::PreconditionFailed { required, current } => {
                format!("Tag doesn't match. Required: {required}, current: {current}")
            }
            ApiError::RouteNotFound => NOT_FOUND.to_owned(),
            ApiError::MethodNotAllowed => METHOD_NOT_ALLOWED.to_owned(),
            ApiError::TooLarge => "The request body is too large.".to_owned(),
            ApiError::Consensus(ConsensusError::Indeterminate(why)) => format!(
                "The request may or may not have been applied: {why}. Read the configuration to find out."
            ),
            ApiError::Consensus(e) => format!("The control service is unavailable: {e}. Retry later."),
        };
        json!({ "description": description })
    }
}

/// Status codes of domain rejections, as in Flocker (section 3.2 of the spec).
pub fn rejection_status(rejection: &Rejection) -> StatusCode {
    match rejection {
        Rejection::TagMismatch { .. } => StatusCode::PRECONDITION_FAILED,
        Rejection::DatasetNotFound | Rejection::ContainerNotFound | Rejection::LeaseNotFound => {
            StatusCode::NOT_FOUND
        }
        Rejection::DatasetDeleted => StatusCode::METHOD_NOT_ALLOWED,
        Rejection::DatasetIdInUse
        | Rejection::DatasetOnOtherNode
        | Rejection::DatasetInUse
        | Rejection::ContainerNameExists
        | Rejection::ExternalPortInUse
        | Rejection::LinkAliasesNotUnique
        | Rejection::LinkLocalPortsNotUnique
        | Rejection::LeaseHeld
        | Rejection::BlockDeviceAlreadyOwned => StatusCode::CONFLICT,
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let ApiError::Consensus(e) = &self {
            tracing::warn!("request failed: {e}");
        }
        let mut response = (self.status(), axum::Json(self.body())).into_response();
        if matches!(self, ApiError::Consensus(ConsensusError::Unavailable(_))) {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}
