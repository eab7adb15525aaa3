//! Extractors whose rejections are JSON errors with stable codes.

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

use crate::error::AppError;

pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = AppError;

    async fn from_request(req: Request, state: &S) -> Result<Self, AppError> {
        // Every request body of the API is a JSON object; serde would also
        // accept a struct written as an array (`[null, null]`), so that is
        // refused first.
        let value = match axum::Json::<serde_json::Value>::from_request(req, state).await {
            Ok(axum::Json(v)) => v,
            Err(rej) => return Err(json_rejection(rej)),
        };
        if !value.is_object() {
            return Err(AppError::bad_request("invalid_request", "the request body must be a JSON object"));
        }
        serde_json::from_value(value)
            .map(ApiJson)
            .map_err(|e| AppError::bad_request("invalid_request", format!("invalid request body: {e}")))
    }
}

fn json_rejection(rej: JsonRejection) -> AppError {
    match rej {
        JsonRejection::MissingJsonContentType(_) => {
            AppError::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type", "expected Content-Type: application/json")
        }
        JsonRejection::BytesRejection(b) if b.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            AppError::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", "request body is too large")
        }
        JsonRejection::JsonSyntaxError(e) => AppError::bad_request("invalid_json", format!("malformed JSON: {}", e.body_text())),
        other => AppError::bad_request("invalid_request", other.body_text()),
    }
}

pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, AppError> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(ApiQuery(v)),
            Err(rej) => Err(query_rejection(rej)),
        }
    }
}

fn query_rejection(rej: QueryRejection) -> AppError {
    AppError::bad_request("invalid_query", rej.body_text())
}
