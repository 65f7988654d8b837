//! Validation of untyped JSON payloads: JSON Schema (draft 2020-12), custom checks, and
//! optional validation of responses.
//!
//! Typed inputs are validated by lift-core already (a `serde` type deriving
//! [`garde::Validate`](https://docs.rs/garde), custom rules included, through
//! [`lift_core::Input`]). This module is for payloads a handler does not type, or that must
//! also satisfy a published schema:
//!
//! - [`JsonSchema`] is a schema compiled once (at cold start) and shared: always draft
//!   2020-12, `$ref`s resolved only inside the document, never fetched. An invalid schema is
//!   a [`SchemaError`] when it is compiled, never a failure per request.
//! - [`Check`] is a custom rule, any `Fn(&Value) -> Result<(), Vec<FieldError>>`;
//!   [`ValidationLayer::check_with_context`] takes one that also reads the request's
//!   `Context` (its tenant, headers or principal);
//!   [`Validator`] runs a schema and checks together and reports every failure of both.
//! - [`ValidationLayer`] applies them to a Lift [`Context`](lift_core::Context), per HTTP
//!   request and per SQS, SNS, EventBridge or DynamoDB Streams record.
//!
//! **Requests.** The payload (the HTTP body, the SQS message body, the SNS message, the
//! EventBridge `detail`, a stream record's image) is parsed exactly as a typed input is, so
//! the refusals are the same: `415` for an HTTP body that is not `application/json` (or
//! `application/*+json`), `400 empty_body`, `400 malformed_json` with the line and column.
//! Then the schema and every check run, and any failure refuses the request with
//! [`Error::Validation`](lift_core::Error::Validation) (`422 validation_failed`), listing
//! every failing field with its JSON pointer and reason; the handler is not called. For a
//! batch, only the record that failed is reported in `batchItemFailures`. The parsed
//! payload is handed on as [`ValidatedJson`] in the context's extensions.
//!
//! **Responses** (optional, [`ValidationLayer::response`]). A successful (2xx) response
//! with a body must be JSON (by its `content-type`) that satisfies the schema and the
//! response checks. One that is not is never sent: the client gets a plain `500` ("internal
//! error", no details) and an `ERROR` event on target `lift::validation` lists the
//! violations, as pointers and reasons that never quote the body. A non-JSON body (text,
//! binary, no content type) on a route that declares a response schema counts as a
//! violation, since the route promised JSON. Bodiless responses (`204`, `()`) and error
//! responses (non-2xx, and handler errors, which Lift renders in its own shape) pass
//! unchecked. For records, a broken response fails the record.
//!
//! The layer checks every call it wraps, so put it on the routes it is for with
//! [`lift_core::with_layer`] (or on the whole App when one schema fits every event it
//! serves, as for a queue consumer).
//!
//! ```
//! use lift_core::testing::{TestApp, events};
//! use lift_core::{App, Context, FieldError, Json, Result, with_layer};
//! use lift_middleware::validation::{JsonSchema, ValidatedJson, ValidationLayer};
//! use serde_json::{Value, json};
//!
//! async fn create_order(ctx: Context) -> Result<Json<Value>> {
//!     let order = ctx.extensions().get::<ValidatedJson>().map(ValidatedJson::value);
//!     Ok(Json(json!({ "id": "o-1", "items": order.map_or(0, |o| o["items"].as_array().map_or(0, Vec::len)) })))
//! }
//!
//! /// Quantities may not exceed the stock of 10 per line.
//! fn within_stock(order: &Value) -> std::result::Result<(), Vec<FieldError>> {
//!     let items = order["items"].as_array().map(Vec::as_slice).unwrap_or_default();
//!     let errors: Vec<FieldError> = items
//!         .iter()
//!         .enumerate()
//!         .filter(|(_, item)| item["qty"].as_u64().is_some_and(|qty| qty > 10))
//!         .map(|(index, _)| FieldError {
//!             pointer: format!("/items/{index}/qty"),
//!             message: "exceeds the stock of 10".to_owned(),
//!         })
//!         .collect();
//!     if errors.is_empty() { Ok(()) } else { Err(errors) }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
//! let order = JsonSchema::new(&json!({
//!     "type": "object",
//!     "required": ["items"],
//!     "properties": {
//!         "items": {
//!             "type": "array",
//!             "minItems": 1,
//!             "items": { "$ref": "#/$defs/line" }
//!         }
//!     },
//!     "$defs": {
//!         "line": {
//!             "type": "object",
//!             "required": ["sku", "qty"],
//!             "properties": { "sku": { "type": "string" }, "qty": { "type": "integer", "minimum": 1 } }
//!         }
//!     }
//! }))?;
//! let created = JsonSchema::new(&json!({
//!     "type": "object",
//!     "required": ["id"],
//!     "properties": { "id": { "type": "string" } }
//! }))?;
//! let validation = ValidationLayer::new()
//!     .request(order)
//!     .check(within_stock)
//!     .response(created);
//! let app = TestApp::new(App::new().post("/orders", with_layer(create_order, validation)))?;
//!
//! let ok = app
//!     .http(events::http("POST", "/orders").json(&json!({"items": [{"sku": "a", "qty": 2}]})).v2())
//!     .await?;
//! assert_eq!(ok.status, 200);
//!
//! let refused = app
//!     .http(events::http("POST", "/orders").json(&json!({"items": [{"sku": "a", "qty": 0}, {"qty": 11}]})).v2())
//!     .await?;
//! assert_eq!(refused.status, 422);
//! let body: Value = refused.json()?;
//! let pointers: Vec<&str> = body["error"]["fields"]
//!     .as_array()
//!     .into_iter()
//!     .flatten()
//!     .filter_map(|field| field["pointer"].as_str())
//!     .collect();
//! assert_eq!(pointers, ["/items/0/qty", "/items/1/sku", "/items/1/qty"]);
//! # Ok(())
//! # }
//! ```
//!
//! # Errors
//! [`SchemaError`] when a schema is compiled; per request, the [`lift_core::Error`]s above;
//! per response, [`InvalidResponse`] inside [`Error::Internal`](lift_core::Error::Internal).
//!
//! # Default
//! [`ValidationLayer::new`] checks nothing until given a schema or a check; `format` is an
//! annotation unless [`JsonSchemaBuilder::validate_formats`] is on.

mod check;
mod layer;
mod schema;

pub use check::{Check, Validator};
pub use layer::{InvalidResponse, ResponseFuture, ValidatedJson, Validation, ValidationLayer};
pub use schema::{JsonSchema, JsonSchemaBuilder, SchemaError};
