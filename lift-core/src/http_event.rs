//! HTTP events in and out: API Gateway REST (v1), HTTP API and Function URLs (v2), ALB.

use std::borrow::Cow;
use std::sync::Arc;

use aws_lambda_events::alb::AlbTargetGroupRequest;
use aws_lambda_events::apigw::{ApiGatewayProxyRequest, ApiGatewayV2httpRequestContext};
use aws_lambda_events::query_map::QueryMap;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use http::{HeaderMap, header};
use lambda_http::request::RequestContext;
use serde::ser::{Serialize, SerializeMap, Serializer};

use crate::context::{HttpRequest, Source};
use crate::error::Error;
use crate::response::{Body, Response};

/// An HTTP event that could not be turned into a request; answered in the source's shape.
pub(crate) struct Rejected {
    pub(crate) multi_value: bool,
    pub(crate) error: Error,
}

fn decode_body(body: Option<String>, base64: bool, multi_value: bool) -> Result<Bytes, Rejected> {
    match body {
        None => Ok(Bytes::new()),
        Some(body) if base64 => STANDARD
            .decode(body)
            .map(Bytes::from)
            .map_err(|_| Rejected {
                multi_value,
                error: Error::bad_request(
                    "the body is marked base64-encoded but is not valid base64",
                ),
            }),
        Some(body) => Ok(Bytes::from(body)),
    }
}

/// Headers from a v1 or ALB event: the multi-value map when the source sent one (it holds
/// every value), plus any name only the single-value map has.
fn merge_headers(multi: HeaderMap, single: HeaderMap) -> HeaderMap {
    if multi.is_empty() {
        return single;
    }
    let mut headers = multi;
    for (name, value) in &single {
        if !headers.contains_key(name) {
            headers.insert(name.clone(), value.clone());
        }
    }
    headers
}

fn decode_component(text: &str) -> String {
    let spaced = text.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced)
        .decode_utf8_lossy()
        .into_owned()
}

/// The query of a v1 or ALB event: the multi-value map when the source sent one (it holds
/// every value), else the single-value one; each name and value through `decode`.
fn query_pairs(
    single: &QueryMap,
    multi: &QueryMap,
    decode: fn(&str) -> String,
) -> Vec<(String, String)> {
    let source = if multi.is_empty() { single } else { multi };
    source.iter().map(|(k, v)| (decode(k), decode(v))).collect()
}

/// A payload 2.0 event (HTTP API, Function URL) as Lift reads it: the fields the request
/// is made of, the headers read straight into a `HeaderMap`; the fields Lift does not use
/// (`version`, `routeKey`, `pathParameters`, `stageVariables`) are skipped unread.
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct V2Event {
    #[serde(default, alias = "path")]
    raw_path: Option<String>,
    #[serde(default)]
    raw_query_string: Option<String>,
    #[serde(default)]
    cookies: Option<Vec<String>>,
    #[serde(default, deserialize_with = "headers::deserialize")]
    headers: HeaderMap,
    #[serde(
        default,
        deserialize_with = "aws_lambda_events::query_map::serde::aws_api_gateway_v2::deserialize_empty"
    )]
    query_string_parameters: QueryMap,
    request_context: ApiGatewayV2httpRequestContext,
    #[serde(default)]
    body: Option<String>,
    #[serde(default)]
    is_base64_encoded: bool,
}

/// Payload 2.0 headers into a `HeaderMap`: each name and value borrowed from the event
/// where JSON allows it and copied once, into the map. A value is a string (payload 2.0
/// joins repeated headers with commas) or, leniently, a list of strings; `null` or a
/// missing map is no headers. A name or value HTTP does not allow is an error, as the
/// event type of `aws_lambda_events` makes it.
mod headers {
    use std::borrow::Cow;
    use std::fmt;

    use http::{HeaderMap, HeaderName, HeaderValue};
    use serde::de::{self, Deserializer, MapAccess, SeqAccess, Unexpected, Visitor};

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(de: D) -> Result<HeaderMap, D::Error> {
        de.deserialize_option(Headers)
    }

    struct Headers;

    impl<'de> Visitor<'de> for Headers {
        type Value = HeaderMap;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a map of header names to strings")
        }

        fn visit_none<E: de::Error>(self) -> Result<HeaderMap, E> {
            Ok(HeaderMap::new())
        }

        fn visit_unit<E: de::Error>(self) -> Result<HeaderMap, E> {
            Ok(HeaderMap::new())
        }

        fn visit_some<D: Deserializer<'de>>(self, de: D) -> Result<HeaderMap, D::Error> {
            de.deserialize_map(self)
        }

        fn visit_map<M: MapAccess<'de>>(self, mut access: M) -> Result<HeaderMap, M::Error> {
            // Room for a dozen headers, as browsers send, before the map grows.
            let mut map = HeaderMap::with_capacity(access.size_hint().unwrap_or(12));
            while let Some(Text(name)) = access.next_key::<Text<'de>>()? {
                let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                    de::Error::invalid_value(Unexpected::Str(&name), &"a header name")
                })?;
                access.next_value_seed(Values {
                    name,
                    map: &mut map,
                })?;
            }
            Ok(map)
        }
    }

    /// A JSON string, borrowed from the event when it holds no escape (`Cow`'s own
    /// `Deserialize` always copies).
    struct Text<'de>(Cow<'de, str>);

    impl<'de> de::Deserialize<'de> for Text<'de> {
        fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
            de.deserialize_str(TextVisitor)
        }
    }

    struct TextVisitor;

    impl<'de> Visitor<'de> for TextVisitor {
        type Value = Text<'de>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a string")
        }

        fn visit_borrowed_str<E: de::Error>(self, text: &'de str) -> Result<Text<'de>, E> {
            Ok(Text(Cow::Borrowed(text)))
        }

        fn visit_str<E: de::Error>(self, text: &str) -> Result<Text<'de>, E> {
            Ok(Text(Cow::Owned(text.to_owned())))
        }

        fn visit_string<E: de::Error>(self, text: String) -> Result<Text<'de>, E> {
            Ok(Text(Cow::Owned(text)))
        }
    }

    /// The value (or values) of one header, appended to the map as they are read.
    struct Values<'a> {
        name: HeaderName,
        map: &'a mut HeaderMap,
    }

    fn value<E: de::Error>(text: &str) -> Result<HeaderValue, E> {
        // The value is not quoted in the error: it may be a credential, and the error is
        // logged and reported as the invocation's.
        HeaderValue::from_str(text).map_err(|_| {
            E::invalid_value(
                Unexpected::Other("text with characters a header cannot carry"),
                &"a header value",
            )
        })
    }

    impl<'de> de::DeserializeSeed<'de> for Values<'_> {
        type Value = ();

        fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<(), D::Error> {
            de.deserialize_any(self)
        }
    }

    impl<'de> Visitor<'de> for Values<'_> {
        type Value = ();

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a header value or a list of them")
        }

        fn visit_str<E: de::Error>(self, text: &str) -> Result<(), E> {
            // The name moves into the map: a name Lift does not know is not copied again.
            self.map.append(self.name, value(text)?);
            Ok(())
        }

        fn visit_seq<S: SeqAccess<'de>>(self, mut seq: S) -> Result<(), S::Error> {
            while let Some(Text(text)) = seq.next_element::<Text<'de>>()? {
                self.map.append(&self.name, value(&text)?);
            }
            Ok(())
        }
    }
}

/// The request of a payload 2.0 event, behind an `Arc`: every future that carries a request
/// then holds a pointer, not the request (kilobytes) copied at each level.
pub(crate) fn from_v2(event: V2Event) -> Result<Arc<HttpRequest>, Rejected> {
    let body = decode_body(event.body, event.is_base64_encoded, false)?;
    let mut path = event
        .raw_path
        .or_else(|| event.request_context.http.path.clone())
        .unwrap_or_else(|| "/".to_owned());
    if let Some(stage) = event.request_context.stage.as_deref()
        && stage != "$default"
        && let Some(rest) = path.strip_prefix('/').and_then(|p| p.strip_prefix(stage))
        && (rest.is_empty() || rest.starts_with('/'))
    {
        path = if rest.is_empty() {
            "/".to_owned()
        } else {
            rest.to_owned()
        };
    }
    let query = match event.raw_query_string.as_deref() {
        Some(raw) if !raw.is_empty() => form_urlencoded::parse(raw.as_bytes())
            .into_owned()
            .collect(),
        _ => event
            .query_string_parameters
            .iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
    };
    let mut headers = event.headers;
    if let Some(cookies) = event.cookies.filter(|c| !c.is_empty())
        && let Ok(value) = http::HeaderValue::from_str(&cookies.join("; "))
    {
        headers.insert(header::COOKIE, value);
    }
    Ok(Arc::new(HttpRequest {
        method: event.request_context.http.method.clone(),
        path,
        path_is_encoded: true,
        query,
        headers,
        body,
        multi_value: false,
        request_context: RequestContext::ApiGatewayV2(event.request_context),
        body_limit: usize::MAX,
    }))
}

/// `multi_value`: whether the event carried a `multiValueHeaders` map, so that the response
/// answers in kind.
pub(crate) fn from_v1(
    event: ApiGatewayProxyRequest,
    multi_value: bool,
) -> Result<Arc<HttpRequest>, Rejected> {
    let body = decode_body(event.body, event.is_base64_encoded, multi_value)?;
    // API Gateway decodes the query string itself.
    let query = query_pairs(
        &event.query_string_parameters,
        &event.multi_value_query_string_parameters,
        str::to_owned,
    );
    Ok(Arc::new(HttpRequest {
        method: event.http_method,
        path: event.path.unwrap_or_else(|| "/".to_owned()),
        path_is_encoded: false,
        query,
        headers: merge_headers(event.multi_value_headers, event.headers),
        body,
        multi_value,
        request_context: RequestContext::ApiGatewayV1(event.request_context),
        body_limit: usize::MAX,
    }))
}

/// `multi_value`: whether the target group sends multi-value headers (the event carried
/// `multiValueHeaders`); the response must then use them too.
pub(crate) fn from_alb(
    event: AlbTargetGroupRequest,
    multi_value: bool,
) -> Result<Arc<HttpRequest>, Rejected> {
    let body = decode_body(event.body, event.is_base64_encoded, multi_value)?;
    // ALB passes the query string through as the client encoded it.
    let query = query_pairs(
        &event.query_string_parameters,
        &event.multi_value_query_string_parameters,
        decode_component,
    );
    Ok(Arc::new(HttpRequest {
        method: event.http_method,
        path: event.path.unwrap_or_else(|| "/".to_owned()),
        path_is_encoded: true,
        query,
        headers: merge_headers(event.multi_value_headers, event.headers),
        body,
        multi_value,
        request_context: RequestContext::Alb(event.request_context),
        body_limit: usize::MAX,
    }))
}

/// Whether a body of this content type can travel as text.
pub(crate) fn is_textual(headers: &HeaderMap) -> bool {
    if headers.contains_key(header::CONTENT_ENCODING) {
        return false;
    }
    let Some(content_type) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return true;
    };
    let essence = crate::input::media_essence(content_type);
    essence.starts_with("text/")
        || essence.ends_with("json")
        || essence.ends_with("xml")
        || essence == "application/javascript"
        || essence == "application/x-www-form-urlencoded"
}

/// The body as the event response carries it: text, or base64 with the flag set.
fn encode_body<'a>(body: &'a Body, headers: &HeaderMap) -> (Cow<'a, str>, bool) {
    let textual = is_textual(headers);
    match body {
        Body::Empty => (Cow::Borrowed(""), false),
        Body::Text(text) if textual => (Cow::Borrowed(text), false),
        Body::Text(text) => (Cow::Owned(STANDARD.encode(text)), true),
        Body::Binary(bytes) => match std::str::from_utf8(bytes) {
            Ok(text) if textual => (Cow::Borrowed(text), false),
            _ => (Cow::Owned(STANDARD.encode(bytes)), true),
        },
        _ => (Cow::Borrowed(""), false),
    }
}

/// Serializes a header map one value per name, repeated values joined with `, ` — except
/// `Set-Cookie`, which cannot be joined (RFC 6265 §3: a comma is part of a cookie's value
/// and date): its first value is sent, and the loss logged.
struct SingleHeaders<'a> {
    headers: &'a HeaderMap,
    skip_cookies: bool,
}

impl Serialize for SingleHeaders<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        for name in self.headers.keys() {
            if name == header::SET_COOKIE {
                if self.skip_cookies {
                    continue;
                }
                let mut cookies = self.headers.get_all(name).iter();
                if let Some(first) = cookies.next() {
                    let dropped = cookies.count();
                    if dropped > 0 {
                        tracing::warn!(target: "lift", dropped, "the response sets several cookies, but the request came without multi-value headers (an ALB target group without them): only the first is sent");
                    }
                    map.serialize_entry(name.as_str(), &String::from_utf8_lossy(first.as_bytes()))?;
                }
                continue;
            }
            let mut joined = String::new();
            for value in self.headers.get_all(name) {
                if !joined.is_empty() {
                    joined.push_str(", ");
                }
                joined.push_str(&String::from_utf8_lossy(value.as_bytes()));
            }
            map.serialize_entry(name.as_str(), &joined)?;
        }
        map.end()
    }
}

/// Serializes a header map with every value of each name in a list.
struct MultiHeaders<'a>(&'a HeaderMap);

impl Serialize for MultiHeaders<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.keys_len()))?;
        for name in self.0.keys() {
            let values: Vec<Cow<'_, str>> = self
                .0
                .get_all(name)
                .iter()
                .map(|v| String::from_utf8_lossy(v.as_bytes()))
                .collect();
            map.serialize_entry(name.as_str(), &values)?;
        }
        map.end()
    }
}

#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct EventResponse<'a> {
    status_code: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    status_description: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    headers: Option<SingleHeaders<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    multi_value_headers: Option<MultiHeaders<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cookies: Option<Vec<Cow<'a, str>>>,
    body: Cow<'a, str>,
    is_base64_encoded: bool,
}

/// Writes `response` in the shape `source` expects: multi-value headers where the request
/// came with them, `cookies` for payload 2.0, a status description for ALB, base64 for
/// binary bodies.
pub(crate) fn to_event_response(
    source: Source,
    multi_value: bool,
    response: &Response,
) -> Result<Box<serde_json::value::RawValue>, serde_json::Error> {
    let headers = response.headers();
    let (body, is_base64_encoded) = encode_body(response.body(), headers);
    let status = response.status();
    let v2 = source == Source::ApiGatewayV2;
    let out = EventResponse {
        status_code: status.as_u16(),
        status_description: (source == Source::Alb).then(|| {
            format!(
                "{} {}",
                status.as_u16(),
                status.canonical_reason().unwrap_or_default()
            )
        }),
        headers: (!multi_value || v2).then_some(SingleHeaders {
            headers,
            skip_cookies: v2,
        }),
        multi_value_headers: (multi_value && !v2).then_some(MultiHeaders(headers)),
        cookies: v2.then(|| {
            headers
                .get_all(header::SET_COOKIE)
                .iter()
                .map(|v| String::from_utf8_lossy(v.as_bytes()))
                .collect()
        }),
        body,
        is_base64_encoded,
    };
    // Written as raw JSON directly: no parse of the text to check it again.
    serde_json::value::to_raw_value(&out)
}

#[cfg(test)]
mod tests {
    use aws_lambda_events::apigw::ApiGatewayV2httpRequest;
    use serde_json::json;

    use super::*;

    fn fixture(name: &str) -> String {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../shared/fixtures/events")
            .join(name);
        std::fs::read_to_string(path).expect("fixture")
    }

    #[test]
    fn a_v2_event_reads_as_the_aws_lambda_events_type_reads_it() {
        for name in [
            "example-apigw-v2-request-no-authorizer.json",
            "example-apigw-v2-request-jwt-authorizer.json",
            "example-apigw-sam-http-request.json",
        ] {
            let text = fixture(name);
            let ours: V2Event = serde_json::from_str(&text).expect(name);
            let theirs: ApiGatewayV2httpRequest = serde_json::from_str(&text).expect(name);
            assert!(!ours.headers.is_empty(), "{name}");
            assert_eq!(ours.headers, theirs.headers, "{name}");
            assert_eq!(ours.raw_path, theirs.raw_path, "{name}");
            assert_eq!(ours.raw_query_string, theirs.raw_query_string, "{name}");
            assert_eq!(ours.cookies, theirs.cookies, "{name}");
            assert_eq!(ours.query_string_parameters, theirs.query_string_parameters);
            assert_eq!(ours.request_context, theirs.request_context, "{name}");
            assert_eq!(ours.body, theirs.body, "{name}");
            assert_eq!(ours.is_base64_encoded, theirs.is_base64_encoded);
        }
    }

    fn context() -> serde_json::Value {
        json!({"http": {"method": "GET", "path": "/", "protocol": "HTTP/1.1", "sourceIp": "192.0.2.1"}})
    }

    fn headers(value: serde_json::Value) -> Result<HeaderMap, serde_json::Error> {
        let event = json!({"headers": value, "requestContext": context()});
        serde_json::from_value::<V2Event>(event).map(|e| e.headers)
    }

    #[test]
    fn headers_take_strings_lists_and_null_and_refuse_what_http_does_not_allow() {
        let map = headers(json!({"accept": "a/b", "x-many": ["1", "2"], "x-escaped": "q\"uote"}))
            .expect("headers");
        assert_eq!(map["accept"], "a/b");
        assert_eq!(map.get_all("x-many").iter().collect::<Vec<_>>(), ["1", "2"]);
        assert_eq!(map["x-escaped"], "q\"uote");
        assert!(headers(json!(null)).expect("null").is_empty());
        let missing: V2Event =
            serde_json::from_value(json!({"requestContext": context()})).expect("no headers");
        assert!(missing.headers.is_empty());
        let name = headers(json!({"bad name": "v"})).expect_err("name");
        assert!(name.to_string().contains("a header name"), "{name}");
        let value = headers(json!({"x": "line\nbreak"})).expect_err("value");
        assert!(value.to_string().contains("a header value"), "{value}");
        assert!(
            headers(json!({"x": 1})).is_err(),
            "a number is not a header value"
        );
    }
}
