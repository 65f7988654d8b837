//! Property tests: whatever path, query, headers and body a client sends, echo answers with
//! exactly that, for every HTTP source.

use std::collections::BTreeMap;

use lift_core::testing::{TestApp, events};
use proptest::prelude::*;
use serde_json::Value;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime")
}

/// Name/value pairs, in order.
type Pairs = Vec<(String, String)>;

/// A path, query pairs, headers and a body.
fn request() -> impl Strategy<Value = (String, Pairs, Pairs, String)> {
    (
        prop::collection::vec("[A-Za-z0-9._~-]{1,12}", 0..5)
            .prop_map(|s| format!("/{}", s.join("/"))),
        prop::collection::vec((".{1,10}", ".{0,12}"), 0..5),
        prop::collection::btree_map("x-[a-z0-9-]{1,16}", "[!-~]([ -~]{0,20}[!-~])?", 0..5)
            .prop_map(|m| m.into_iter().collect::<Vec<_>>()),
        ".{0,64}",
    )
}

fn grouped(pairs: &[(String, String)]) -> BTreeMap<String, Vec<String>> {
    let mut map: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (k, v) in pairs {
        map.entry(k.clone()).or_default().push(v.clone());
    }
    map
}

proptest! {
    #[test]
    fn http_requests_round_trip((path, query, headers, body) in request(), source in 0..3u8) {
        let app = TestApp::new(echo::app()).expect("app");
        let mut builder = events::http("PUT", &path).body(&body);
        for (k, v) in &query {
            builder = builder.query(k, v);
        }
        for (k, v) in &headers {
            builder = builder.header(k, v);
        }
        let (event, name) = match source {
            0 => (builder.v1(), "apigw_v1"),
            1 => (builder.v2(), "apigw_v2"),
            _ => (builder.alb(), "alb"),
        };
        let response = runtime().block_on(app.http(event)).expect("response");
        prop_assert_eq!(response.status, 200);
        let echoed: Value = response.json().expect("json");
        prop_assert_eq!(&echoed["source"], name);
        prop_assert_eq!(&echoed["method"], "PUT");
        prop_assert_eq!(echoed["path"].as_str(), Some(path.as_str()));
        prop_assert_eq!(echoed["body"].as_str(), Some(body.as_str()));
        let echoed_query: BTreeMap<String, Vec<String>> =
            serde_json::from_value(echoed["query"].clone()).expect("query");
        prop_assert_eq!(echoed_query, grouped(&query));
        let echoed_headers: BTreeMap<String, Vec<String>> =
            serde_json::from_value(echoed["headers"].clone()).expect("headers");
        prop_assert_eq!(echoed_headers, grouped(&headers));
    }
}
