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

async fn deployed() -> Deployed {
    let path = std::env::var("LIFT_STACK_FILE").expect(
        "LIFT_STACK_FILE is not set: run scripts/test.sh, which deploys the examples onto the emulator",
    );
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read the stack file {path}: {e}"));
    let stack: Value = serde_json::from_str(&text).expect("stack file is JSON");
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
            .map(|item| serde_dynamo::from_item(item.clone()).expect("an order item"))
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
}
