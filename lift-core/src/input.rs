//! Typed, validated handler input.

use http::header;
use serde::de::DeserializeOwned;

use crate::context::{Context, Payload};
use crate::error::{Error, FieldError, json_pointer};
use crate::response::Json;

/// A value a handler can take as its second argument, decoded from the event's payload:
/// the HTTP body, the SQS message body, the SNS message, the EventBridge `detail`, or a
/// DynamoDB stream record's new image (old image for `REMOVE`).
///
/// Any `serde` type that derives [`garde::Validate`] is an `Input`: it is parsed, then
/// validated, and every failing field is reported. Wrap a type in [`Json`] to take it
/// without validation.
pub trait Input: Sized + Send + 'static {
    /// Decodes (and validates) the input from the context.
    ///
    /// # Errors
    /// [`Error::UnsupportedMediaType`], [`Error::EmptyBody`], [`Error::MalformedJson`] or
    /// [`Error::Validation`], each naming what was wrong.
    fn from_context(ctx: &Context) -> Result<Self, Error>;
}

impl<T> Input for T
where
    T: DeserializeOwned + garde::Validate + Send + 'static,
    T::Context: Default,
{
    fn from_context(ctx: &Context) -> Result<Self, Error> {
        let value: T = decode(ctx)?;
        value.validate().map_err(|report| {
            Error::Validation(
                report
                    .iter()
                    .map(|(path, error)| FieldError {
                        pointer: json_pointer(&path.to_string()),
                        message: error.message().to_owned(),
                    })
                    .collect(),
            )
        })?;
        Ok(value)
    }
}

impl<T> Input for Json<T>
where
    T: DeserializeOwned + Send + 'static,
{
    fn from_context(ctx: &Context) -> Result<Self, Error> {
        decode(ctx).map(Json)
    }
}

/// Decodes the context's payload into `T`, with errors that name line, column and field.
pub(crate) fn decode<T: DeserializeOwned>(ctx: &Context) -> Result<T, Error> {
    match &ctx.payload {
        Payload::Http(request) => {
            // An encoded body (gzip) no layer decoded: not JSON, whatever its type says.
            if let Some(encoding) = request
                .headers
                .get(header::CONTENT_ENCODING)
                .map(|v| v.to_str().unwrap_or("?").trim())
                .filter(|e| !e.is_empty() && !e.eq_ignore_ascii_case("identity"))
            {
                return Err(Error::new(
                    http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "unsupported_content_encoding",
                    format!(
                        "the body's Content-Encoding `{encoding}` is not decoded here; send it unencoded"
                    ),
                ));
            }
            if !request.body.is_empty() || request.headers.contains_key(header::CONTENT_TYPE) {
                let content_type = request
                    .headers
                    .get(header::CONTENT_TYPE)
                    .and_then(|value| value.to_str().ok())
                    .unwrap_or_default();
                if !is_json(content_type) {
                    return Err(Error::UnsupportedMediaType {
                        found: content_type.to_owned(),
                    });
                }
            }
            from_json(&request.body)
        }
        #[cfg(feature = "dynamodb")]
        Payload::DynamoDb(record) => {
            let image = if record.change.new_image.is_empty() {
                &record.change.old_image
            } else {
                &record.change.new_image
            };
            serde_dynamo::from_item(image.clone()).map_err(|error| {
                Error::Validation(vec![FieldError {
                    pointer: String::new(),
                    message: error.to_string(),
                }])
            })
        }
        #[allow(unreachable_patterns)]
        _ => from_json(ctx.body()),
    }
}

/// Parses JSON, telling a syntax error (400, with line and column) from a data error
/// (422, with the JSON pointer of the field).
pub(crate) fn from_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Error> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(Error::EmptyBody);
    }
    // The fast path parses once; only a failed parse is run again to find the field's path.
    if let Ok(value) = serde_json::from_slice(bytes) {
        return Ok(value);
    }
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
        let path = error.path().to_string();
        let inner = error.into_inner();
        if inner.is_data() {
            Error::Validation(vec![FieldError {
                pointer: json_pointer(&path),
                message: strip_position(&inner.to_string()),
            }])
        } else {
            Error::MalformedJson {
                line: inner.line(),
                column: inner.column(),
                message: strip_position(&inner.to_string()),
            }
        }
    })?;
    deserializer.end().map_err(|inner| Error::MalformedJson {
        line: inner.line(),
        column: inner.column(),
        message: strip_position(&inner.to_string()),
    })?;
    Ok(value)
}

/// serde_json appends " at line L column C"; the body carries those as fields.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(index) => message[..index].to_owned(),
        None => message.to_owned(),
    }
}

/// The media type without its parameters, lower-cased (`Text/HTML; charset=x` → `text/html`).
pub(crate) fn media_essence(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

/// `application/json`, `application/*+json`, with or without parameters.
pub(crate) fn is_json(content_type: &str) -> bool {
    let essence = media_essence(content_type);
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Order {
        id: u32,
        items: Vec<Item>,
    }
    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Item {
        qty: u8,
    }

    #[test]
    fn syntax_errors_name_line_and_column() {
        let error = from_json::<Order>(b"{\n  \"id\": 1,\n  oops }").expect_err("invalid");
        match error {
            Error::MalformedJson { line, column, .. } => assert_eq!((line, column), (3, 3)),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn data_errors_name_the_field() {
        let error =
            from_json::<Order>(br#"{"id": 1, "items": [{"qty": 300}]}"#).expect_err("invalid");
        match error {
            Error::Validation(fields) => {
                assert_eq!(fields[0].pointer, "/items/0/qty");
                assert!(fields[0].message.contains("300"), "{}", fields[0].message);
            }
            other => panic!("unexpected {other:?}"),
        }
        let missing = from_json::<Order>(br#"{"id": 1}"#).expect_err("missing");
        assert!(
            matches!(&missing, Error::Validation(fields) if fields[0].message.contains("missing field `items`")),
            "{missing:?}"
        );
    }

    #[test]
    fn trailing_garbage_and_empty_bodies_are_refused() {
        assert!(matches!(
            from_json::<serde_json::Value>(b"{} {}"),
            Err(Error::MalformedJson { .. })
        ));
        assert!(matches!(
            from_json::<serde_json::Value>(b"  "),
            Err(Error::EmptyBody)
        ));
    }

    #[test]
    fn json_media_types() {
        assert!(is_json("application/json"));
        assert!(is_json("Application/JSON; charset=utf-8"));
        assert!(is_json("application/problem+json"));
        assert!(!is_json("text/plain"));
        assert!(!is_json(""));
    }
}
