//! Typed handler output and its conversion into a response.

use http::{HeaderValue, StatusCode, header};
use serde::Serialize;

/// The body type of Lift responses: empty, text or binary.
pub use aws_lambda_events::encodings::Body;

/// The response every handler's output becomes. For batch records, a 2xx/3xx status means
/// the record succeeded and anything else that it failed.
pub type Response = http::Response<Body>;

/// Converts a handler's output into a [`Response`].
pub trait IntoResponse {
    /// Performs the conversion.
    fn into_response(self) -> Response;
}

impl IntoResponse for Response {
    fn into_response(self) -> Response {
        self
    }
}

/// `()` is a success with no content: `204` for HTTP, a processed record for batches.
impl IntoResponse for () {
    fn into_response(self) -> Response {
        status_only(StatusCode::NO_CONTENT)
    }
}

impl IntoResponse for StatusCode {
    fn into_response(self) -> Response {
        status_only(self)
    }
}

impl IntoResponse for String {
    fn into_response(self) -> Response {
        with_type(
            StatusCode::OK,
            "text/plain; charset=utf-8",
            Body::Text(self),
        )
    }
}

impl IntoResponse for &'static str {
    fn into_response(self) -> Response {
        self.to_owned().into_response()
    }
}

impl<T: IntoResponse> IntoResponse for (StatusCode, T) {
    fn into_response(self) -> Response {
        let mut response = self.1.into_response();
        *response.status_mut() = self.0;
        response
    }
}

/// A JSON value: as output a `200` with `content-type: application/json`; as input a body
/// parsed without validation (see [`crate::Input`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Json<T>(pub T);

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        json_response(StatusCode::OK, &self.0)
    }
}

/// A `201 Created` with a JSON body.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Created<T>(pub T);

impl<T: Serialize> IntoResponse for Created<T> {
    fn into_response(self) -> Response {
        json_response(StatusCode::CREATED, &self.0)
    }
}

/// A `204 No Content`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NoContent;

impl IntoResponse for NoContent {
    fn into_response(self) -> Response {
        status_only(StatusCode::NO_CONTENT)
    }
}

pub(crate) fn status_only(status: StatusCode) -> Response {
    let mut response = Response::new(Body::Empty);
    *response.status_mut() = status;
    response
}

fn with_type(status: StatusCode, content_type: &'static str, body: Body) -> Response {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// Serializes `value` as a JSON response; a value that cannot be serialized is a logged 500.
pub(crate) fn json_response<T: Serialize + ?Sized>(status: StatusCode, value: &T) -> Response {
    match serde_json::to_string(value) {
        Ok(text) => with_type(status, "application/json", Body::Text(text)),
        Err(error) => {
            tracing::error!(target: "lift::response", error = %error, "response could not be serialized");
            with_type(
                StatusCode::INTERNAL_SERVER_ERROR,
                "application/json",
                Body::Text(
                    r#"{"error":{"code":"internal","message":"internal error"}}"#.to_owned(),
                ),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_outputs_pick_status_and_content_type() {
        let created = Created(serde_json::json!({"id": 1})).into_response();
        assert_eq!(created.status(), StatusCode::CREATED);
        assert_eq!(created.headers()[header::CONTENT_TYPE], "application/json");
        assert_eq!(().into_response().status(), StatusCode::NO_CONTENT);
        let accepted = (StatusCode::ACCEPTED, "queued").into_response();
        assert_eq!(accepted.status(), StatusCode::ACCEPTED);
        assert!(matches!(accepted.body(), Body::Text(text) if text == "queued"));
    }
}
