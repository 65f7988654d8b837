//! `orders` deployed on the emulator: each call is a real Lambda invocation of the
//! function's `bootstrap`, which talks to its real DynamoDB tables.
//!
//! `scripts/test.sh` starts the emulator, builds and deploys the functions and points
//! `LIFT_STACK_FILE` at the deployment's outputs before the tests run. Without it these
//! tests fail loudly: they never pretend to pass.

use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_lambda::primitives::Blob;
use futures_util::future::join_all;
use lift_core::testing::{HttpResponse, events};
use orders::Order;
use serde_json::{Value, json};

struct Deployed {
    function: String,
    orders_table: String,
    lambda: aws_sdk_lambda::Client,
    dynamodb: aws_sdk_dynamodb::Client,
}

/// The deployment's outputs, as `scripts/deploy.py` wrote them.
fn stack() -> Value {
    lift_core::testing::deployed_stack().unwrap_or_else(|e| {
        panic!("no deployment to test ({e}): run scripts/test.sh, which deploys the examples onto the emulator")
    })
}

async fn deployed() -> Deployed {
    let stack = stack();
    let config = lift_core::aws::sdk_config().await;
    Deployed {
        function: stack["functions"]["orders"]["name"]
            .as_str()
            .expect("the orders function is deployed")
            .to_owned(),
        orders_table: stack["outputs"]["OrdersTableName"]
            .as_str()
            .expect("the orders table is an output")
            .to_owned(),
        lambda: aws_sdk_lambda::Client::new(config),
        dynamodb: aws_sdk_dynamodb::Client::new(config),
    }
}

impl Deployed {
    /// Invokes the function with an HTTP API (payload 2.0) event.
    async fn call(&self, event: Value) -> HttpResponse {
        let output = self
            .lambda
            .invoke()
            .function_name(&self.function)
            .payload(Blob::new(serde_json::to_vec(&event).expect("event")))
            .send()
            .await
            .expect("the Invoke call itself succeeds");
        let payload: Value = serde_json::from_slice(output.payload().expect("payload").as_ref())
            .expect("payload is JSON");
        assert!(
            output.function_error().is_none(),
            "function error: {payload}"
        );
        HttpResponse::from_value(&payload).expect("an HTTP response")
    }

    async fn place(&self, key: Option<&str>, body: &Value) -> HttpResponse {
        let mut event = events::http("POST", "/orders").json(body);
        if let Some(key) = key {
            event = event.header("idempotency-key", key);
        }
        self.call(event.v2()).await
    }

    async fn fetch(&self, id: &str) -> HttpResponse {
        self.call(events::http("GET", &format!("/orders/{id}")).v2())
            .await
    }

    /// The orders stored for `customer`.
    async fn stored_for(&self, customer: &str) -> Vec<Order> {
        let output = self
            .dynamodb
            .scan()
            .table_name(&self.orders_table)
            .filter_expression("customer = :customer")
            .expression_attribute_values(":customer", AttributeValue::S(customer.to_owned()))
            .consistent_read(true)
            .send()
            .await
            .expect("scan the orders table");
        output
            .items()
            .iter()
            .map(|item| lift_middleware::dynamo::from_item(item.clone()).expect("an order item"))
            .collect()
    }
}

/// A customer name no other test run has used.
fn customer(test: &str) -> String {
    format!("{test}-{:08x}", fastrand::u32(..))
}

fn order_body(customer: &str, quantity: u32) -> Value {
    json!({"customer": customer, "items": [{"sku": "A-1", "quantity": quantity}, {"sku": "B-7", "quantity": 1}]})
}

#[tokio::test]
async fn a_repeated_idempotency_key_places_one_order() {
    let d = deployed().await;
    let who = customer("repeat");
    let key = format!("key-{who}");
    let body = order_body(&who, 2);

    let first = d.place(Some(&key), &body).await;
    assert_eq!(first.status, 201, "{}", first.text());
    let placed: Order = first.json().expect("an order");
    assert_eq!(placed.customer, who);
    assert_eq!(placed.items.len(), 2);

    let again = d.place(Some(&key), &body).await;
    assert_eq!(again.status, 201, "{}", again.text());
    assert_eq!(again.json::<Order>().expect("an order"), placed);

    let reused = d.place(Some(&key), &order_body(&who, 5)).await;
    assert_eq!(reused.status, 422, "{}", reused.text());
    assert_eq!(
        reused.json::<Value>().expect("json")["error"]["code"],
        "idempotency_key_reused"
    );

    assert_eq!(d.stored_for(&who).await, [placed]);

    // Without a key, each call places an order.
    let a = d.place(None, &body).await;
    let b = d.place(None, &body).await;
    assert_eq!((a.status, b.status), (201, 201));
    assert_ne!(
        a.json::<Order>().expect("order").id,
        b.json::<Order>().expect("order").id
    );
    assert_eq!(d.stored_for(&who).await.len(), 3);
}

/// Idempotency keys are the customer's own: two customers who send the same key each get
/// their order placed, and neither gets the other's answer.
/// A run that stored its order but never stored its answer (its answer lost, or the run cut
/// short), then released or lost its key: the request again, with the key, gets that order,
/// and there is still one. (The retry placed a second order under a new id.)
#[tokio::test]
async fn a_retry_after_a_run_that_stored_its_order_places_no_second() {
    let d = deployed().await;
    let customer = customer("cut-short");
    let key = format!("k-{:08x}", fastrand::u32(..));
    let body = order_body(&customer, 2);
    let earlier = Order {
        id: orders::order_id(&customer, Some(&key)),
        customer: customer.clone(),
        items: serde_json::from_value(body["items"].clone()).expect("items"),
        placed_at: 1,
    };
    d.dynamodb
        .put_item()
        .table_name(&d.orders_table)
        .set_item(Some(
            lift_middleware::dynamo::to_item(&earlier).expect("item"),
        ))
        .send()
        .await
        .expect("the earlier run's order");
    let answer = d.place(Some(&key), &body).await;
    assert_eq!(answer.status, 201, "{}", answer.text());
    let placed: Order = answer.json().expect("an order");
    assert_eq!(placed, earlier);
    assert_eq!(d.stored_for(&customer).await, [earlier]);

    // A key that is not visible ASCII names its order too (a random id before).
    let placed: Order = d
        .place(Some("ключ-1"), &body)
        .await
        .json()
        .expect("an order");
    assert_eq!(placed.id, orders::order_id(&customer, Some("ключ-1")));
}

#[tokio::test]
async fn two_customers_with_one_key_each_place_their_order() {
    let d = deployed().await;
    let (alice, bob) = (customer("alice"), customer("bob"));
    let key = format!("shared-{alice}");
    let for_alice = d.place(Some(&key), &order_body(&alice, 1)).await;
    let for_bob = d.place(Some(&key), &order_body(&bob, 1)).await;
    assert_eq!(for_alice.status, 201, "{}", for_alice.text());
    assert_eq!(for_bob.status, 201, "{}", for_bob.text());
    let (alices, bobs): (Order, Order) = (
        for_alice.json().expect("order"),
        for_bob.json().expect("order"),
    );
    assert_eq!(alices.customer, alice);
    assert_eq!(bobs.customer, bob, "bob must not get alice's order");
    assert_ne!(alices.id, bobs.id);
    // Each repeat gets its own customer's order back.
    let again = d.place(Some(&key), &order_body(&bob, 1)).await;
    assert_eq!(again.json::<Order>().expect("order"), bobs);
    assert_eq!(d.stored_for(&alice).await, [alices]);
    assert_eq!(d.stored_for(&bob).await, [bobs]);
}

#[tokio::test]
async fn concurrent_retries_with_one_key_place_one_order() {
    let d = deployed().await;
    let who = customer("concurrent");
    let key = format!("key-{who}");
    let body = order_body(&who, 1);
    let responses = join_all((0..6).map(|_| d.place(Some(&key), &body))).await;
    let mut ids = Vec::new();
    for response in &responses {
        assert_eq!(response.status, 201, "{}", response.text());
        ids.push(response.json::<Order>().expect("order").id);
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "every retry got the first order: {ids:?}");
    assert_eq!(d.stored_for(&who).await.len(), 1);
}

#[tokio::test]
async fn bad_input_is_refused_and_places_nothing() {
    let d = deployed().await;
    let who = customer("invalid");

    let invalid = d
        .place(
            None,
            &json!({"customer": who, "items": [{"sku": "", "quantity": 0}]}),
        )
        .await;
    assert_eq!(invalid.status, 422, "{}", invalid.text());
    let fields: Vec<String> = invalid.json::<Value>().expect("json")["error"]["fields"]
        .as_array()
        .expect("fields")
        .iter()
        .map(|field| field["pointer"].as_str().expect("pointer").to_owned())
        .collect();
    assert_eq!(fields, ["/items/0/quantity", "/items/0/sku"]);

    let malformed = d
        .call(
            events::http("POST", "/orders")
                .header("content-type", "application/json")
                .body("{\"customer\": ")
                .v2(),
        )
        .await;
    assert_eq!(malformed.status, 400, "{}", malformed.text());

    let empty = d.place(None, &json!({"customer": who, "items": []})).await;
    assert_eq!(empty.status, 422, "{}", empty.text());

    assert!(d.stored_for(&who).await.is_empty());
}

#[tokio::test]
async fn reads_are_cached_and_unknown_orders_are_not() {
    let d = deployed().await;
    let who = customer("cached");
    let placed: Order = d
        .place(None, &order_body(&who, 3))
        .await
        .json()
        .expect("order");

    let first = d.fetch(&placed.id).await;
    assert_eq!(first.status, 200, "{}", first.text());
    assert_eq!(first.header("x-cache"), Some("miss"));
    assert_eq!(first.json::<Order>().expect("order"), placed);

    let second = d.fetch(&placed.id).await;
    assert_eq!(second.header("x-cache"), Some("hit"));
    assert_eq!(second.json::<Order>().expect("order"), placed);

    // An error answer is never kept: the repeat asks the table again.
    for _ in 0..2 {
        let unknown = d.fetch("o-0000000000000000").await;
        assert_eq!(unknown.status, 404, "{}", unknown.text());
        assert_eq!(
            unknown.json::<Value>().expect("json")["error"]["code"],
            "order_not_found"
        );
        assert_ne!(unknown.header("x-cache"), Some("hit"));
    }
    // An id longer than the table takes as a key is not found either (a 500 before).
    let long = d.fetch(&"o".repeat(3000)).await;
    assert_eq!(long.status, 404, "{}", long.text());
}

/// The authorizer's secret, as `scripts/deploy.py` gives the local deployment
/// (`OrdersAuthSecret`; the template has no default).
const DEPLOYED_SECRET: &[u8] = b"lift-local-orders-secret-of-32-bytes";

/// One HTTP/1.1 request over a plain socket to the emulator's HTTP API endpoint:
/// the status and the body.
fn http(
    method: &str,
    url: &str,
    authorization: Option<&str>,
    body: Option<&Value>,
) -> (u16, String) {
    use std::io::{Read, Write};

    let rest = url.strip_prefix("http://").expect("plain http url");
    let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let mut stream = std::net::TcpStream::connect(host).expect("connect to the emulator");
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .expect("timeout");
    let body = body.map(Value::to_string).unwrap_or_default();
    let authorization = authorization
        .map(|value| format!("Authorization: {value}\r\n"))
        .unwrap_or_default();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\n{authorization}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).expect("send");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read");
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .expect("a status line");
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// The emulator URL of an API the stack file lists under `kind` (`http_apis`, `rest_apis`).
fn api_url(kind: &str, name: &str) -> String {
    stack()[kind][name]["local_url"]
        .as_str()
        .unwrap_or_else(|| panic!("{name} is deployed"))
        .to_owned()
}

/// Through the HTTP API, API Gateway asks the deployed Lambda authorizer about every call:
/// only a token it verifies reaches the orders function; the others get its deny (403).
#[tokio::test]
async fn the_http_api_lets_through_only_what_the_lambda_authorizer_allows() {
    let api = api_url("http_apis", "OrdersHttpApi");
    let who = customer("http-api");
    // The body claims another customer: the authorizer's verified subject wins.
    let body = order_body(&format!("{who}-claimed"), 1);
    let good = crate::authorizer::token(DEPLOYED_SECRET, orders::TOKEN_ISSUER, &who, 600);

    // No identity source: API Gateway refuses without asking the authorizer.
    let (status, text) = http("POST", &format!("{api}/orders"), None, Some(&body));
    assert_eq!(status, 401, "no token: {text}");
    for refused in [
        "Bearer not-a-jwt".to_owned(),
        format!(
            "Bearer {}",
            crate::authorizer::token(
                b"some-other-secret-of-32-bytes-long!",
                orders::TOKEN_ISSUER,
                &who,
                600
            )
        ),
        format!(
            "Bearer {}",
            crate::authorizer::token(DEPLOYED_SECRET, orders::TOKEN_ISSUER, &who, -3600)
        ),
    ] {
        let (status, text) = http(
            "POST",
            &format!("{api}/orders"),
            Some(&refused),
            Some(&body),
        );
        assert_eq!(status, 403, "{refused}: {text}");
    }

    let (status, text) = http(
        "POST",
        &format!("{api}/orders"),
        Some(&format!("Bearer {good}")),
        Some(&body),
    );
    assert_eq!(status, 201, "{text}");
    let placed: Order = serde_json::from_str(&text).expect("an order");
    let (status, text) = http(
        "GET",
        &format!("{api}/orders/{}", placed.id),
        Some(&format!("Bearer {good}")),
        None,
    );
    assert_eq!(status, 200, "{text}");
    assert_eq!(
        serde_json::from_str::<Order>(&text).expect("an order"),
        placed
    );
    // A read without an authorizer (a direct invocation) is cached apart: another
    // customer's read through the API does not get it from the cache.
    let deployed = deployed().await;
    assert_eq!(deployed.fetch(&placed.id).await.status, 200);
    assert_eq!(
        deployed.fetch(&placed.id).await.header("x-cache"),
        Some("hit")
    );
    // Another customer's valid token does not read it.
    let other = crate::authorizer::token(
        DEPLOYED_SECRET,
        orders::TOKEN_ISSUER,
        &customer("http-api-other"),
        600,
    );
    let (status, text) = http(
        "GET",
        &format!("{api}/orders/{}", placed.id),
        Some(&format!("Bearer {other}")),
        None,
    );
    assert_eq!(status, 404, "another customer's order: {text}");
    assert_eq!(
        placed.customer, who,
        "the token's subject, passed on by the authorizer"
    );
    assert_eq!(deployed.stored_for(&who).await, [placed]);
}

/// The same authorizer behind the REST API, as a `TOKEN` authorizer: there a token it
/// refuses is the `Unauthorized` invocation error, which API Gateway answers with 401
/// (any other invocation error would be a 500).
#[tokio::test]
async fn the_rest_api_answers_401_for_the_tokens_the_authorizer_refuses() {
    let api = api_url("rest_apis", "OrdersRestApi");
    let who = customer("rest-api");
    // The body claims another customer: the authorizer's verified subject wins.
    let body = order_body(&format!("{who}-claimed"), 2);

    let (status, text) = http("POST", &format!("{api}/orders"), None, Some(&body));
    assert_eq!(status, 401, "no token: {text}");
    for refused in [
        "Bearer not-a-jwt".to_owned(),
        format!(
            "Bearer {}",
            crate::authorizer::token(DEPLOYED_SECRET, "someone-else", &who, 600)
        ),
    ] {
        let (status, text) = http(
            "POST",
            &format!("{api}/orders"),
            Some(&refused),
            Some(&body),
        );
        assert_eq!(status, 401, "{refused}: {text}");
        assert!(text.contains("Unauthorized"), "{text}");
    }

    let good = crate::authorizer::token(DEPLOYED_SECRET, orders::TOKEN_ISSUER, &who, 600);
    let (status, text) = http(
        "POST",
        &format!("{api}/orders"),
        Some(&format!("Bearer {good}")),
        Some(&body),
    );
    assert_eq!(status, 201, "{text}");
    let placed: Order = serde_json::from_str(&text).expect("an order");
    assert_eq!(
        placed.customer, who,
        "the token's subject, passed on by the authorizer"
    );
    assert_eq!(deployed().await.stored_for(&who).await, [placed]);
}
