//! `echo`: a conformance function for every event source Lift serves. It answers with what
//! Lift parsed, so a test (or a person) can check the adapters against real events.
//!
//! - HTTP, any method and path: `200` with
//!   `{"source", "method", "path", "query": {name: [values]}, "headers": {name: [values]}, "body"}`.
//! - SQS: the records whose body contains `fail` are reported in `batchItemFailures`.
//! - DynamoDB Streams: the `REMOVE` records are reported in `batchItemFailures`.
//! - SNS: `{"source": "sns", "message_ids": [...]}`.
//! - EventBridge and schedules: `{"source": "eventbridge", "event_source", "detail_type", "id"}`.

use std::collections::BTreeMap;

use lift_core::{App, Context, Error, Json, Result};
use serde::Serialize;

/// What echo answers to an HTTP request.
#[derive(Debug, Serialize)]
pub struct HttpEcho {
    /// `apigw_v1`, `apigw_v2` or `alb`.
    pub source: &'static str,
    /// The request method.
    pub method: String,
    /// The request path.
    pub path: String,
    /// Every query parameter with all its values, decoded.
    pub query: BTreeMap<String, Vec<String>>,
    /// Every header by lower-case name with all its values.
    pub headers: BTreeMap<String, Vec<String>>,
    /// The body as text.
    pub body: String,
}

async fn http(ctx: Context) -> Result<Json<HttpEcho>> {
    let request = ctx
        .http()
        .ok_or_else(|| Error::internal("an HTTP route ran without a request"))?;
    let mut query: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, value) in request.query_pairs() {
        query.entry(name.clone()).or_default().push(value.clone());
    }
    let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, value) in request.headers() {
        headers
            .entry(name.as_str().to_owned())
            .or_default()
            .push(String::from_utf8_lossy(value.as_bytes()).into_owned());
    }
    Ok(Json(HttpEcho {
        source: ctx.source().as_str(),
        method: request.method().to_string(),
        path: request.path().to_owned(),
        query,
        headers,
        body: String::from_utf8_lossy(request.body()).into_owned(),
    }))
}

async fn sqs(ctx: Context) -> Result<()> {
    if String::from_utf8_lossy(ctx.body()).contains("fail") {
        return Err(Error::bad_request("the message asks to fail"));
    }
    Ok(())
}

async fn dynamodb(ctx: Context) -> Result<()> {
    match ctx.dynamodb_record() {
        Some(record) if record.event_name == "REMOVE" => {
            Err(Error::bad_request("REMOVE records fail by design"))
        }
        _ => Ok(()),
    }
}

/// What echo answers to an SNS notification.
#[derive(Debug, Serialize)]
pub struct SnsEcho {
    /// Always `sns`.
    pub source: &'static str,
    /// The notification's message id.
    pub message_ids: Vec<String>,
}

async fn sns(ctx: Context) -> Result<Json<SnsEcho>> {
    let ids = ctx
        .sns_record()
        .map(|record| record.sns.message_id.clone())
        .into_iter()
        .collect();
    Ok(Json(SnsEcho {
        source: "sns",
        message_ids: ids,
    }))
}

/// What echo answers to an EventBridge event.
#[derive(Debug, Serialize)]
pub struct EventEcho {
    /// Always `eventbridge`.
    pub source: &'static str,
    /// The event's `source`.
    pub event_source: String,
    /// The event's `detail-type`.
    pub detail_type: String,
    /// The event's id.
    pub id: String,
}

async fn event(ctx: Context) -> Result<Json<EventEcho>> {
    let event = ctx
        .eventbridge_event()
        .ok_or_else(|| Error::internal("an event route ran without an event"))?;
    Ok(Json(EventEcho {
        source: "eventbridge",
        event_source: event.source.clone(),
        detail_type: event.detail_type.clone(),
        id: event.id.clone().unwrap_or_default(),
    }))
}

/// The echo App.
pub fn app() -> App {
    App::new()
        .any("/", http)
        .any("/{*path}", http)
        .sqs(sqs)
        .dynamodb(dynamodb)
        .sns(sns)
        .event_fallback(event)
}
