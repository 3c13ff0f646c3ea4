//! RFC 9457 problem+json responses with a stable `code`, and the mapping of domain errors
//! and warp rejections onto them.

use chat_domain::ChatError;
use serde::Serialize;
use warp::http::StatusCode;
use warp::reply::{Reply, Response};

/// An RFC 9457 problem: what went wrong, for people (`detail`) and for code (`code`).
/// Internal failures carry a correlation id in `detail` that the server's log line also
/// carries, never the underlying error.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct Problem {
    /// Always `about:blank`: `code` says which problem it is.
    #[serde(rename = "type")]
    kind: &'static str,
    /// The HTTP status's reason phrase.
    title: &'static str,
    /// The HTTP status code.
    status: u16,
    /// What happened and what to do, in plain words.
    detail: String,
    /// A stable code to branch on, e.g. `MISSING_FIELD`, `CONTENT_TOO_LONG`,
    /// `INVALID_PAGINATION`, `UNKNOWN_ROOM`, `FORBIDDEN`, `SENDER_MISMATCH`,
    /// `RATE_LIMITED`, `STORE_UNAVAILABLE`, `STORE_OUTCOME_UNKNOWN`, `UNAUTHENTICATED`,
    /// `NOT_FOUND`.
    code: String,
}

/// A problem+json response.
pub(crate) fn response(status: StatusCode, code: &str, detail: &str) -> Response {
    let problem = Problem {
        kind: "about:blank",
        title: status.canonical_reason().unwrap_or("Error"),
        status: status.as_u16(),
        detail: detail.to_owned(),
        code: code.to_owned(),
    };
    let body = serde_json::to_vec(&problem).unwrap_or_default();
    let mut response = warp::reply::with_status(body, status).into_response();
    response.headers_mut().insert(
        warp::http::header::CONTENT_TYPE,
        warp::http::HeaderValue::from_static("application/problem+json"),
    );
    response
}

/// The HTTP status for a domain error; internal details are replaced by a correlation id
/// (see [`crate::incident`]).
pub(crate) fn from_chat_error(error: &ChatError) -> Response {
    let error = &crate::incident::conceal(error.clone(), "a REST request");
    let status = match error {
        ChatError::Invalid(_) => StatusCode::BAD_REQUEST,
        ChatError::UnknownRoom(_) => StatusCode::NOT_FOUND,
        ChatError::SenderMismatch { .. } | ChatError::Forbidden(_) => StatusCode::FORBIDDEN,
        ChatError::InvalidResume { .. } => StatusCode::BAD_REQUEST,
        ChatError::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
        ChatError::StoreUnavailable(_)
        | ChatError::StoreOutcomeUnknown(_)
        | ChatError::BusUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
    };
    response(status, error.code(), &error.to_string())
}

/// A request without a valid credential in jwt mode; the text says why.
#[derive(Debug)]
pub(crate) struct Unauthenticated(pub(crate) String);

impl warp::reject::Reject for Unauthenticated {}

/// A request body that is not `application/json`.
#[derive(Debug)]
pub(crate) struct UnsupportedMediaType;

impl warp::reject::Reject for UnsupportedMediaType {}

/// Turns what warp rejected (no route, wrong method, body too large, no credential) into
/// problem+json.
pub(crate) async fn recover(
    rejection: warp::Rejection,
) -> Result<Response, std::convert::Infallible> {
    if let Some(Unauthenticated(why)) = rejection.find::<Unauthenticated>() {
        let mut response = response(StatusCode::UNAUTHORIZED, "UNAUTHENTICATED", why);
        response.headers_mut().insert(
            warp::http::header::WWW_AUTHENTICATE,
            warp::http::HeaderValue::from_static("Bearer"),
        );
        return Ok(response);
    }
    let (status, code, detail) = if rejection.find::<UnsupportedMediaType>().is_some() {
        (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UNSUPPORTED_MEDIA_TYPE",
            "send the body as JSON with Content-Type: application/json".to_owned(),
        )
    } else if let Some(e) = rejection.find::<warp::cors::CorsForbidden>() {
        (StatusCode::FORBIDDEN, "ORIGIN_NOT_ALLOWED", e.to_string())
    } else if rejection.is_not_found() {
        (
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            "no such endpoint".to_owned(),
        )
    } else if rejection.find::<warp::reject::PayloadTooLarge>().is_some() {
        (
            StatusCode::PAYLOAD_TOO_LARGE,
            "PAYLOAD_TOO_LARGE",
            "the request body is larger than this endpoint accepts".to_owned(),
        )
    } else if rejection.find::<warp::reject::MethodNotAllowed>().is_some() {
        (
            StatusCode::METHOD_NOT_ALLOWED,
            "METHOD_NOT_ALLOWED",
            "this endpoint does not accept that method".to_owned(),
        )
    } else if let Some(e) = rejection.find::<warp::reject::InvalidQuery>() {
        (StatusCode::BAD_REQUEST, "INVALID_QUERY", e.to_string())
    } else if let Some(e) = rejection.find::<warp::reject::MissingHeader>() {
        (StatusCode::BAD_REQUEST, "MISSING_HEADER", e.to_string())
    } else if let Some(e) = rejection.find::<warp::reject::InvalidHeader>() {
        (StatusCode::BAD_REQUEST, "INVALID_HEADER", e.to_string())
    } else if rejection.find::<warp::reject::LengthRequired>().is_some() {
        (
            StatusCode::LENGTH_REQUIRED,
            "LENGTH_REQUIRED",
            "send a Content-Length header".to_owned(),
        )
    } else {
        tracing::warn!(?rejection, "unhandled rejection");
        (
            StatusCode::BAD_REQUEST,
            "BAD_REQUEST",
            format!("the request was rejected: {rejection:?}"),
        )
    };
    Ok(response(status, code, &detail))
}
