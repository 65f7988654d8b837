//! Recognises the kind of an event from its JSON, reading no further than it has to: the
//! first record's `eventSource` for a batch, `version` 2.0 with a `routeKey` (or else
//! `requestContext.http`) for payload 2.0,
//! `requestContext.connectionId` for a WebSocket API, and `detail-type` with `source` for
//! EventBridge. The typed parse that follows reads the
//! whole event once.

use std::borrow::Cow;
use std::cell::Cell;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// What arrived.
pub(crate) enum Kind {
    ApiGatewayV1 {
        multi_value: bool,
    },
    ApiGatewayV2,
    Alb {
        multi_value: bool,
    },
    Sqs,
    DynamoDb,
    Sns,
    EventBridge,
    /// An API Gateway WebSocket API event (`$connect`, `$disconnect` or a message).
    WebSocket,
    /// An API Gateway Lambda authorizer request (a top-level `methodArn` or `routeArn`),
    /// seen before the event looked like anything else: only an App without an
    /// authorizer gets this far with one.
    Authorizer,
    /// A described event Lift has no adapter for (empty: describe it from its keys).
    Unknown(String),
}

/// Stops the parse once the kind is known; the kind itself travels in the cell.
const FOUND: &str = "event kind found";

/// Returns the event's kind, or `None` when it is not a JSON object.
pub(crate) fn probe(json: &str) -> Option<Kind> {
    if leads_as_payload_2(json) {
        return Some(Kind::ApiGatewayV2);
    }
    let found = Cell::new(None);
    let mut deserializer = serde_json::Deserializer::from_str(json);
    let finished = Top(&found).deserialize(&mut deserializer).is_ok();
    match found.take() {
        Some(kind) => Some(kind),
        None if finished => Some(Kind::Unknown(String::new())),
        None => None,
    }
}

/// Whether the event opens as Lambda sends payload 2.0, `{"version":"2.0","routeKey":`
/// (JSON whitespace allowed between the tokens): the conclusion the parse below reaches
/// after those two keys, without a parser and without the error that stops it.
fn leads_as_payload_2(json: &str) -> bool {
    const TOKENS: [&[u8]; 7] = [
        b"{",
        b"\"version\"",
        b":",
        b"\"2.0\"",
        b",",
        b"\"routeKey\"",
        b":",
    ];
    let mut rest = json.as_bytes();
    for token in TOKENS {
        match rest.trim_ascii_start().strip_prefix(token) {
            Some(after) => rest = after,
            None => return false,
        }
    }
    true
}

#[derive(Deserialize)]
enum TopKey {
    Records,
    #[serde(rename = "version")]
    Version,
    #[serde(rename = "routeKey")]
    RouteKey,
    #[serde(rename = "requestContext")]
    RequestContext,
    #[serde(rename = "httpMethod")]
    HttpMethod,
    #[serde(rename = "multiValueHeaders")]
    MultiValueHeaders,
    #[serde(rename = "detail-type")]
    DetailType,
    #[serde(rename = "source")]
    Source,
    #[serde(rename = "methodArn", alias = "routeArn")]
    Arn,
    #[serde(other)]
    Other,
}

#[derive(Deserialize)]
enum ContextKey {
    #[serde(rename = "http")]
    Http,
    #[serde(rename = "elb")]
    Elb,
    #[serde(rename = "connectionId")]
    ConnectionId,
    #[serde(other)]
    Other,
}

#[derive(Deserialize)]
enum RecordKey {
    #[serde(rename = "eventSource", alias = "EventSource")]
    EventSource,
    #[serde(other)]
    Other,
}

fn stop<E: de::Error>(found: &Cell<Option<Kind>>, kind: Kind) -> Result<(), E> {
    found.set(Some(kind));
    Err(E::custom(FOUND))
}

struct Top<'a>(&'a Cell<Option<Kind>>);

impl<'de> DeserializeSeed<'de> for Top<'_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Top<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a Lambda event object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let (mut http_method, mut multi_value, mut alb, mut context) = (false, false, false, false);
        let (mut detail_type, mut source) = (false, false);
        let (mut version_2, mut route_key, mut http) = (false, false, false);
        while let Some(key) = map.next_key::<TopKey>()? {
            match key {
                TopKey::Version => {
                    version_2 = map.next_value::<Option<Cow<'_, str>>>()?.as_deref() == Some("2.0");
                }
                TopKey::RouteKey => {
                    route_key = true;
                    map.next_value::<IgnoredAny>()?;
                }
                TopKey::Records => {
                    map.next_value_seed(Records(self.0))?;
                    return stop(
                        self.0,
                        Kind::Unknown("a `Records` batch with no event source".to_owned()),
                    );
                }
                TopKey::RequestContext => {
                    context = true;
                    match map.next_value_seed(RequestContext(self.0))? {
                        Shape::Http => http = true,
                        Shape::Elb => alb = true,
                        Shape::Other => {}
                    }
                }
                TopKey::HttpMethod => {
                    http_method = true;
                    map.next_value::<IgnoredAny>()?;
                }
                TopKey::MultiValueHeaders => {
                    multi_value = map.next_value::<Option<IgnoredAny>>()?.is_some();
                }
                TopKey::DetailType => {
                    detail_type = true;
                    map.next_value::<IgnoredAny>()?;
                }
                TopKey::Source => {
                    source = true;
                    map.next_value::<IgnoredAny>()?;
                }
                // Only authorizer requests carry one; Lambda sends it before the request
                // context, which would otherwise make the event an HTTP request.
                TopKey::Arn => return stop(self.0, Kind::Authorizer),
                TopKey::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
            if detail_type && source && !context {
                return stop(self.0, Kind::EventBridge);
            }
            // Payload 2.0 (HTTP API, Function URL) leads with both; no other event has
            // them together (payload 1.0 says "1.0", WebSocket events have no version,
            // VPC Lattice's 2.0 has no route key). The request context comes much later.
            if version_2 && route_key {
                return stop(self.0, Kind::ApiGatewayV2);
            }
        }
        // A payload 2.0 request context does not stop the parse: out of Lambda's order (a
        // re-serialised event, keys sorted), an authorizer request's `routeArn` may come
        // after it.
        let kind = if http {
            Kind::ApiGatewayV2
        } else if alb {
            Kind::Alb { multi_value }
        } else if context && http_method {
            Kind::ApiGatewayV1 { multi_value }
        } else {
            Kind::Unknown(String::new())
        };
        self.0.set(Some(kind));
        Ok(())
    }
}

/// What a `requestContext` says of its event.
enum Shape {
    /// `http`: payload 2.0.
    Http,
    /// `elb`: an ALB request.
    Elb,
    Other,
}

/// `requestContext`: a WebSocket event is known at once; payload 2.0 and ALB by its shape.
struct RequestContext<'a>(&'a Cell<Option<Kind>>);

impl<'de> DeserializeSeed<'de> for RequestContext<'_> {
    type Value = Shape;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Shape, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for RequestContext<'_> {
    type Value = Shape;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a request context")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Shape, E> {
        Ok(Shape::Other)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Shape, A::Error> {
        let mut shape = Shape::Other;
        while let Some(key) = map.next_key::<ContextKey>()? {
            match key {
                ContextKey::Http => shape = Shape::Http,
                ContextKey::ConnectionId => {
                    // Only WebSocket events carry a connection; a null one is no connection.
                    if map.next_value::<Option<IgnoredAny>>()?.is_some() {
                        stop::<A::Error>(self.0, Kind::WebSocket)?;
                    }
                    continue;
                }
                ContextKey::Elb => shape = Shape::Elb,
                ContextKey::Other => {}
            }
            map.next_value::<IgnoredAny>()?;
        }
        Ok(shape)
    }
}

/// `Records`: the first record's `eventSource` decides.
struct Records<'a>(&'a Cell<Option<Kind>>);

impl<'de> DeserializeSeed<'de> for Records<'_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for Records<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a list of records")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        seq.next_element_seed(FirstRecord(self.0))?;
        stop(
            self.0,
            Kind::Unknown("a `Records` batch with no event source".to_owned()),
        )
    }
}

/// The first record: its `eventSource` decides (the parse stops there).
struct FirstRecord<'a>(&'a Cell<Option<Kind>>);

impl<'de> DeserializeSeed<'de> for FirstRecord<'_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for FirstRecord<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a record")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<RecordKey>()? {
            match key {
                RecordKey::EventSource => {
                    let source = map.next_value::<Option<String>>()?;
                    let kind = match source.as_deref() {
                        Some("aws:sqs") => Kind::Sqs,
                        Some("aws:dynamodb") => Kind::DynamoDb,
                        Some("aws:sns") => Kind::Sns,
                        Some(other) => Kind::Unknown(format!("a batch of `{other}` records")),
                        None => Kind::Unknown("a `Records` batch with no event source".to_owned()),
                    };
                    return stop(self.0, kind);
                }
                RecordKey::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(json: &str) -> &'static str {
        match probe(json) {
            Some(Kind::ApiGatewayV1 { multi_value: true }) => "v1-multi",
            Some(Kind::ApiGatewayV1 { multi_value: false }) => "v1",
            Some(Kind::ApiGatewayV2) => "v2",
            Some(Kind::Alb { multi_value: true }) => "alb-multi",
            Some(Kind::Alb { multi_value: false }) => "alb",
            Some(Kind::Sqs) => "sqs",
            Some(Kind::DynamoDb) => "dynamodb",
            Some(Kind::Sns) => "sns",
            Some(Kind::EventBridge) => "eventbridge",
            Some(Kind::WebSocket) => "websocket",
            Some(Kind::Authorizer) => "authorizer",
            Some(Kind::Unknown(_)) => "unknown",
            None => "none",
        }
    }

    #[test]
    fn the_payload_2_shortcut_agrees_with_the_parse() {
        let lambda = r#"{"version":"2.0","routeKey":"GET /x","rawPath":"/x"}"#;
        let spaced = "{ \"version\" :\n\t\"2.0\" , \"routeKey\": \"$default\"}";
        for json in [lambda, spaced] {
            assert!(leads_as_payload_2(json), "{json}");
            let found = Cell::new(None);
            let mut deserializer = serde_json::Deserializer::from_str(json);
            let _ = Top(&found).deserialize(&mut deserializer);
            assert!(matches!(found.take(), Some(Kind::ApiGatewayV2)), "{json}");
        }
        for json in [
            r#"{"version":"1.0","routeKey":"GET /x","httpMethod":"GET"}"#,
            r#"{"version":"2.0","rawPath":"/x"}"#,
            r#"{"routeKey":"GET /x","version":"2.0"}"#,
            r#"{"version":"2.0 ","routeKey":"x"}"#,
            r#"{"version":"2.0""#,
            "",
        ] {
            assert!(!leads_as_payload_2(json), "{json}");
        }
        assert_eq!(kind(r#"{"routeKey":"GET /x","version":"2.0"}"#), "v2");
    }

    #[test]
    fn recognises_each_shape() {
        assert_eq!(
            kind(r#"{"Records":[{"eventSource":"aws:sqs"},{"x":1}]}"#),
            "sqs"
        );
        assert_eq!(kind(r#"{"Records":[{"EventSource":"aws:sns"}]}"#), "sns");
        assert_eq!(
            kind(r#"{"Records":[{"eventID":"1","eventSource":"aws:dynamodb","dynamodb":{}}]}"#),
            "dynamodb"
        );
        assert_eq!(kind(r#"{"Records":[{"eventID":"1"}]}"#), "unknown");
        assert_eq!(
            kind(r#"{"Records":[{"eventSource":"aws:dynamodb"}]}"#),
            "dynamodb"
        );
        assert_eq!(kind(r#"{"Records":[{"eventSource":"aws:s3"}]}"#), "unknown");
        assert_eq!(kind(r#"{"Records":[]}"#), "unknown");
        assert_eq!(
            kind(r#"{"rawPath":"/","requestContext":{"http":{"method":"GET"}}}"#),
            "v2"
        );
        assert_eq!(
            kind(r#"{"requestContext":{"elb":{}},"httpMethod":"GET","multiValueHeaders":{}}"#),
            "alb-multi"
        );
        assert_eq!(
            kind(r#"{"requestContext":{"elb":{}},"httpMethod":"GET","headers":{}}"#),
            "alb"
        );
        assert_eq!(
            kind(r#"{"httpMethod":"GET","multiValueHeaders":null,"requestContext":{"stage":"p"}}"#),
            "v1"
        );
        assert_eq!(
            kind(r#"{"source":"a","detail-type":"b","detail":{}}"#),
            "eventbridge"
        );
        assert_eq!(
            kind(r#"{"requestContext":{"connectionId":"x"}}"#),
            "websocket"
        );
        assert_eq!(
            kind(
                r#"{"body":"{}","requestContext":{"routeKey":"send","eventType":"MESSAGE","connectionId":"c1"}}"#
            ),
            "websocket"
        );
        assert_eq!(
            kind(r#"{"httpMethod":"GET","requestContext":{"connectionId":null,"stage":"p"}}"#),
            "v1"
        );
        assert_eq!(kind(r#"{"foo":1}"#), "unknown");
        // Payload 2.0 is known from its first two keys, whatever follows.
        assert_eq!(
            kind(r#"{"version":"2.0","routeKey":"$default","requestContext":7}"#),
            "v2"
        );
        assert_eq!(
            kind(r#"{"routeKey":"GET /","version":"2.0","rawPath":"/"}"#),
            "v2"
        );
        // Payload 1.0 of an HTTP API has a route key too, and a 1.0 version.
        assert_eq!(
            kind(
                r#"{"version":"1.0","routeKey":"GET /","httpMethod":"GET","requestContext":{"stage":"p"}}"#
            ),
            "v1"
        );
        // VPC Lattice's 2.0 events carry no route key.
        assert_eq!(
            kind(
                r#"{"version":"2.0","path":"/","method":"GET","requestContext":{"serviceNetworkArn":"a"}}"#
            ),
            "unknown"
        );
        assert_eq!(kind(r#"[1,2]"#), "none");
        assert_eq!(kind(r#""text""#), "none");
    }

    /// Authorizer requests in the order Lambda sends them: the ARN comes before what would
    /// make them a REST or payload 2.0 request.
    #[test]
    fn authorizer_requests_are_told_from_http_requests() {
        assert_eq!(
            kind(r#"{"type":"TOKEN","authorizationToken":"t","methodArn":"arn:a"}"#),
            "authorizer"
        );
        assert_eq!(
            kind(
                r#"{"type":"REQUEST","methodArn":"arn:a","resource":"/","path":"/","httpMethod":"GET","headers":{},"requestContext":{"stage":"p"}}"#
            ),
            "authorizer"
        );
        assert_eq!(
            kind(
                r#"{"version":"2.0","type":"REQUEST","routeArn":"arn:a","identitySource":["t"],"routeKey":"GET /","rawPath":"/","requestContext":{"http":{"method":"GET"}}}"#
            ),
            "authorizer"
        );
        // Keys sorted, as a re-serialised event has them: the request context comes first.
        assert_eq!(
            kind(
                r#"{"headers":{},"identitySource":["t"],"rawPath":"/","requestContext":{"accountId":"1","http":{"method":"GET"}},"routeArn":"arn:a","routeKey":"GET /","type":"REQUEST","version":"2.0"}"#
            ),
            "authorizer"
        );
        assert_eq!(
            kind(
                r#"{"headers":{},"rawPath":"/","requestContext":{"accountId":"1","http":{"method":"GET"}},"routeKey":"GET /","version":"2.0"}"#
            ),
            "v2"
        );
        // Inside a header map or a body, the name is not the event's.
        assert_eq!(
            kind(r#"{"httpMethod":"GET","headers":{"methodArn":"x"},"requestContext":{}}"#),
            "v1"
        );
    }
}
