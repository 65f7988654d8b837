//! JSON Schema validation, custom checks and response validation, driven through a real
//! `App` in-process.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use lift_core::testing::{HttpResponse, TestApp, batch_failures, events};
use lift_core::{
    App, Body, Context, Error, FieldError, IntoResponse, Json, Response, Result, with_layer,
};
use lift_middleware::validation::{
    JsonSchema, SchemaError, ValidatedJson, ValidationLayer, Validator,
};
use serde_json::{Value, json};

/// An order: a customer and lines of `sku` + `qty`, with `$defs`/`$ref`.
fn order_schema() -> JsonSchema {
    JsonSchema::new(&json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "required": ["customer", "items"],
        "properties": {
            "customer": {
                "type": "object",
                "required": ["id"],
                "properties": {
                    "id": { "type": "string", "minLength": 1 },
                    "email": { "type": "string" }
                }
            },
            "items": { "type": "array", "minItems": 1, "items": { "$ref": "#/$defs/line" } }
        },
        "$defs": {
            "line": {
                "type": "object",
                "required": ["sku", "qty"],
                "properties": {
                    "sku": { "type": "string", "pattern": "^[A-Z]{3}-[0-9]+$" },
                    "qty": { "type": "integer", "minimum": 1, "maximum": 100 }
                }
            }
        }
    }))
    .expect("a valid schema")
}

fn valid_order() -> Value {
    json!({
        "customer": { "id": "c-1" },
        "items": [{ "sku": "ABC-1", "qty": 2 }, { "sku": "XYZ-9", "qty": 1 }]
    })
}

/// Counts its calls and echoes the validated payload it was handed.
fn counting_handler() -> (
    impl Fn(Context) -> std::future::Ready<Result<Json<Value>>> + Clone + Send + Sync + 'static,
    Arc<AtomicUsize>,
) {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&calls);
    let handler = move |ctx: Context| {
        counter.fetch_add(1, Ordering::SeqCst);
        let echoed = ctx
            .extensions()
            .get::<ValidatedJson>()
            .map(|validated| validated.value().clone())
            .unwrap_or(Value::Null);
        std::future::ready(Ok(Json(echoed)))
    };
    (handler, calls)
}

fn app_with(layer: ValidationLayer) -> (TestApp, Arc<AtomicUsize>) {
    let (handler, calls) = counting_handler();
    let app = App::new().post("/orders", with_layer(handler, layer));
    (TestApp::new(app).expect("app"), calls)
}

async fn post(app: &TestApp, body: &Value) -> HttpResponse {
    app.http(events::http("POST", "/orders").json(body).v2())
        .await
        .expect("an HTTP response")
}

fn error_of(response: &HttpResponse) -> Value {
    let body: Value = response.json().expect("a JSON error body");
    body["error"].clone()
}

/// The `(pointer, message)` pairs of a 422 body.
fn fields_of(response: &HttpResponse) -> Vec<(String, String)> {
    error_of(response)["fields"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|field| {
            (
                field["pointer"].as_str().unwrap_or_default().to_owned(),
                field["message"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

fn pointers_of(response: &HttpResponse) -> Vec<String> {
    fields_of(response).into_iter().map(|(p, _)| p).collect()
}

#[tokio::test]
async fn a_valid_body_reaches_the_handler_with_the_parsed_payload() {
    let (app, calls) = app_with(ValidationLayer::new().request(order_schema()));
    let response = post(&app, &valid_order()).await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(response.json::<Value>().expect("JSON"), valid_order());
}

#[tokio::test]
async fn an_invalid_body_lists_every_failing_field_and_the_handler_never_runs() {
    let (app, calls) = app_with(ValidationLayer::new().request(order_schema()));
    let response = post(
        &app,
        &json!({
            "customer": { "id": "", "email": 7 },
            "items": [
                { "sku": "ABC-1", "qty": 2 },
                { "sku": "abc", "qty": 0 },
                { "qty": "three" }
            ]
        }),
    )
    .await;
    assert_eq!(response.status, 422, "{}", response.text());
    assert_eq!(error_of(&response)["code"], "validation_failed");
    let mut fields = fields_of(&response);
    fields.sort();
    let pointers: Vec<&str> = fields.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(
        pointers,
        [
            "/customer/email",
            "/customer/id",
            "/items/1/qty",
            "/items/1/sku",
            "/items/2/qty",
            "/items/2/sku",
        ]
    );
    let reason = |pointer: &str| {
        fields
            .iter()
            .find(|(p, _)| p == pointer)
            .map(|(_, m)| m.as_str())
            .unwrap_or_default()
    };
    assert!(
        reason("/customer/email").contains("\"string\""),
        "{fields:?}"
    );
    assert!(
        reason("/customer/id").contains("shorter than 1"),
        "{fields:?}"
    );
    assert!(
        reason("/items/1/qty").contains("minimum of 1"),
        "{fields:?}"
    );
    assert!(
        reason("/items/1/sku").contains("^[A-Z]{3}-[0-9]+$"),
        "{fields:?}"
    );
    assert!(reason("/items/2/qty").contains("\"integer\""), "{fields:?}");
    assert_eq!(reason("/items/2/sku"), "is required");
    assert_eq!(calls.load(Ordering::SeqCst), 0, "the handler never ran");

    let missing = post(&app, &json!({})).await;
    assert_eq!(missing.status, 422);
    assert_eq!(pointers_of(&missing), ["/customer", "/items"]);
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn draft_2020_12_keywords_are_enforced() {
    // prefixItems, $defs/$ref, unevaluatedProperties (through allOf) and dependentRequired.
    let schema = JsonSchema::new(&json!({
        "type": "object",
        "allOf": [{ "$ref": "#/$defs/named" }],
        "properties": {
            "point": {
                "type": "array",
                "prefixItems": [{ "type": "number" }, { "type": "number" }, { "enum": ["m", "ft"] }],
                "items": false
            },
            "card": { "type": "string" },
            "billing": { "type": "string" }
        },
        "dependentRequired": { "card": ["billing"] },
        "unevaluatedProperties": false,
        "$defs": {
            "named": { "properties": { "name": { "type": "string" } }, "required": ["name"] }
        }
    }))
    .expect("a valid schema");
    let (app, calls) = app_with(ValidationLayer::new().request(schema));

    let ok = post(
        &app,
        &json!({ "name": "n", "point": [1, 2.5, "m"], "card": "4111", "billing": "here" }),
    )
    .await;
    assert_eq!(ok.status, 200, "{}", ok.text());
    assert_eq!(calls.load(Ordering::SeqCst), 1);

    let refused = post(
        &app,
        &json!({ "point": ["x", 2, "km", 4], "card": "4111", "extra": true, "more": 1 }),
    )
    .await;
    assert_eq!(refused.status, 422, "{}", refused.text());
    let fields = fields_of(&refused);
    let mut pointers = pointers_of(&refused);
    pointers.sort();
    assert_eq!(
        pointers,
        [
            "/billing", "/extra", "/more", "/name", "/point/0", "/point/2", "/point/3"
        ],
        "{fields:?}"
    );
    let reason = |pointer: &str| {
        fields
            .iter()
            .find(|(p, _)| p == pointer)
            .map(|(_, m)| m.clone())
            .unwrap_or_default()
    };
    assert_eq!(reason("/billing"), "is required when `card` is present");
    assert_eq!(reason("/extra"), "is not allowed (unevaluated property)");
    assert_eq!(reason("/name"), "is required");
    assert_eq!(
        reason("/point/3"),
        "is not allowed",
        "items: false after prefixItems"
    );
    assert!(reason("/point/2").contains("\"m\" or \"ft\""), "{fields:?}");
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "the refused call never ran"
    );

    // A property the allOf branch evaluates is not "unevaluated".
    let evaluated = post(&app, &json!({ "name": "only" })).await;
    assert_eq!(evaluated.status, 200, "{}", evaluated.text());
}

#[tokio::test]
async fn malformed_empty_and_mistyped_bodies_are_refused_as_typed_input_does() {
    #[derive(serde::Deserialize, garde::Validate)]
    struct Typed {
        #[garde(skip)]
        #[allow(dead_code)]
        name: String,
    }
    async fn typed(_ctx: Context, _input: Typed) -> Result<()> {
        Ok(())
    }
    let (handler, calls) = counting_handler();
    let app = TestApp::new(
        App::new()
            .post(
                "/orders",
                with_layer(handler, ValidationLayer::new().request(order_schema())),
            )
            .post("/typed", typed),
    )
    .expect("app");
    let send = |path: &'static str, content_type: Option<&'static str>, body: &'static str| {
        let app = app.clone();
        async move {
            let mut event = events::http("POST", path).body(body);
            if let Some(content_type) = content_type {
                event = event.header("content-type", content_type);
            }
            app.http(event.v2()).await.expect("an HTTP response")
        }
    };

    let malformed = send(
        "/orders",
        Some("application/json"),
        "{\n  \"customer\": {\"id\": \"c\"},\n  \"items\": [,]\n}",
    )
    .await;
    assert_eq!(malformed.status, 400, "{}", malformed.text());
    let error = error_of(&malformed);
    assert_eq!(error["code"], "malformed_json");
    assert_eq!(
        (error["line"].as_u64(), error["column"].as_u64()),
        (Some(3), Some(13))
    );

    for (content_type, body, status, code) in [
        (Some("application/json"), "{\"a\": }", 400, "malformed_json"),
        (Some("application/json"), "", 400, "empty_body"),
        (None, "", 400, "empty_body"),
        (Some("application/json"), "  \n", 400, "empty_body"),
        (Some("text/plain"), "{}", 415, "unsupported_media_type"),
        (None, "{}", 415, "unsupported_media_type"),
    ] {
        let validated = send("/orders", content_type, body).await;
        let typed = send("/typed", content_type, body).await;
        assert_eq!(
            validated.status,
            status,
            "{content_type:?} {body:?}: {}",
            validated.text()
        );
        assert_eq!(error_of(&validated)["code"], code);
        assert_eq!(
            (typed.status, error_of(&typed)["code"].clone()),
            (validated.status, error_of(&validated)["code"].clone()),
            "the layer answers {content_type:?} {body:?} as a typed input does"
        );
    }
    let vendor = send(
        "/orders",
        Some("application/vnd.orders+json; charset=utf-8"),
        r#"{"customer": {"id": "c"}, "items": [{"sku": "ABC-1", "qty": 1}]}"#,
    )
    .await;
    assert_eq!(vendor.status, 200, "{}", vendor.text());
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "only the valid request ran"
    );
}

#[test]
fn an_invalid_schema_is_a_config_error_when_it_is_built() {
    let wrong_type = JsonSchema::new(&json!({ "type": "integer", "minimum": "five" }))
        .expect_err("minimum must be a number");
    match &wrong_type {
        SchemaError::Invalid { pointer, .. } => assert_eq!(pointer, "/minimum"),
        other => panic!("unexpected {other:?}"),
    }
    assert!(wrong_type.to_string().contains("/minimum"), "{wrong_type}");

    let dangling = JsonSchema::new(&json!({ "$ref": "#/$defs/missing" }));
    assert!(
        matches!(dangling, Err(SchemaError::Invalid { .. })),
        "{dangling:?}"
    );

    let draft7 = JsonSchema::new(&json!({
        "$schema": "http://json-schema.org/draft-07/schema#",
        "type": "object"
    }));
    assert!(
        matches!(&draft7, Err(SchemaError::UnsupportedDialect { found }) if found.contains("draft-07")),
        "{draft7:?}"
    );

    let not_json: std::result::Result<JsonSchema, _> = "{ \"type\": ".parse();
    assert!(
        matches!(not_json, Err(SchemaError::NotJson { line: 1, .. })),
        "{not_json:?}"
    );

    let text: JsonSchema = r#"{ "type": "object", "required": ["id"] }"#
        .parse()
        .expect("a schema from text");
    assert!(text.is_valid(&json!({ "id": 1 })));
    assert!(!text.is_valid(&json!({})));
}

/// Delivery must come after pickup; reports against the field that is wrong.
fn delivery_after_pickup(value: &Value) -> std::result::Result<(), Vec<FieldError>> {
    let pickup = value.pointer("/window/pickup").and_then(Value::as_u64);
    let delivery = value.pointer("/window/delivery").and_then(Value::as_u64);
    match (pickup, delivery) {
        (Some(pickup), Some(delivery)) if delivery <= pickup => Err(vec![FieldError {
            pointer: "/window/delivery".to_owned(),
            message: "must come after pickup".to_owned(),
        }]),
        _ => Ok(()),
    }
}

/// No more than 3 lines per order; one error for the whole array.
fn at_most_three_lines(value: &Value) -> std::result::Result<(), Vec<FieldError>> {
    match value["items"].as_array() {
        Some(items) if items.len() > 3 => Err(vec![FieldError {
            pointer: "/items".to_owned(),
            message: "at most 3 lines".to_owned(),
        }]),
        _ => Ok(()),
    }
}

#[tokio::test]
async fn custom_checks_combine_with_the_schema_and_both_are_reported() {
    let layer = ValidationLayer::new()
        .request(order_schema())
        .check(delivery_after_pickup)
        .check(at_most_three_lines);
    let (app, calls) = app_with(layer);

    let mut order = valid_order();
    order["window"] = json!({ "pickup": 10, "delivery": 20 });
    assert_eq!(post(&app, &order).await.status, 200);

    let response = post(
        &app,
        &json!({
            "customer": {},
            "items": [{"sku": "ABC-1", "qty": 1}, {"sku": "ABC-2", "qty": 1},
                      {"sku": "ABC-3", "qty": 1}, {"sku": "ABC-4", "qty": 1}],
            "window": { "pickup": 20, "delivery": 10 }
        }),
    )
    .await;
    assert_eq!(response.status, 422, "{}", response.text());
    assert_eq!(
        fields_of(&response),
        [
            ("/customer/id".to_owned(), "is required".to_owned()),
            (
                "/window/delivery".to_owned(),
                "must come after pickup".to_owned()
            ),
            ("/items".to_owned(), "at most 3 lines".to_owned()),
        ],
        "schema errors first, then each check's"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);

    // A check alone (no schema) still parses the body and refuses.
    let (check_only, check_calls) = app_with(ValidationLayer::new().check(at_most_three_lines));
    let refused = post(&check_only, &json!({ "items": [1, 2, 3, 4] })).await;
    assert_eq!(refused.status, 422);
    assert_eq!(pointers_of(&refused), ["/items"]);
    assert_eq!(check_calls.load(Ordering::SeqCst), 0);

    // The same combination outside a layer.
    let validator = Validator::new()
        .schema(order_schema())
        .check(at_most_three_lines);
    assert!(validator.validate(&valid_order()).is_ok());
    let errors = validator
        .validate(&json!({ "items": [1, 2, 3, 4] }))
        .expect_err("invalid");
    assert!(errors.len() >= 6, "{errors:?}");
    assert_eq!(errors.last().map(|e| e.pointer.as_str()), Some("/items"));
}

/// A writer that keeps what the subscriber logs, for asserting on log lines.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut buffer) = self.0.lock() {
            buffer.extend_from_slice(bytes);
        }
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        self.0
            .lock()
            .map(|buffer| String::from_utf8_lossy(&buffer).into_owned())
            .unwrap_or_default()
    }
}

/// No line may order more than the caller's plan allows (`x-plan: free`: 5).
fn within_the_plan(value: &Value, ctx: &Context) -> std::result::Result<(), Vec<FieldError>> {
    let limit = match ctx.header("x-plan") {
        Some("free") => 5,
        _ => return Ok(()),
    };
    let lines = value["items"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    let over: Vec<FieldError> = lines
        .iter()
        .enumerate()
        .filter(|(_, line)| line["qty"].as_u64().is_some_and(|qty| qty > limit))
        .map(|(index, _)| FieldError {
            pointer: format!("/items/{index}/qty"),
            message: format!("the free plan allows at most {limit} per line"),
        })
        .collect();
    if over.is_empty() { Ok(()) } else { Err(over) }
}

#[tokio::test]
async fn a_check_can_read_the_request_context() {
    let (app, calls) = app_with(
        ValidationLayer::new()
            .request(order_schema())
            .check(at_most_three_lines)
            .check_with_context(within_the_plan),
    );
    let mut big = valid_order();
    big["items"][1]["qty"] = json!(9);
    let send = |plan: &'static str, body: Value| {
        let app = &app;
        async move {
            app.http(
                events::http("POST", "/orders")
                    .header("x-plan", plan)
                    .json(&body)
                    .v2(),
            )
            .await
            .expect("an HTTP response")
        }
    };

    let pro = send("pro", big.clone()).await;
    assert_eq!(pro.status, 200, "{}", pro.text());
    let free = send("free", big.clone()).await;
    assert_eq!(free.status, 422, "{}", free.text());
    assert_eq!(
        fields_of(&free),
        [(
            "/items/1/qty".to_owned(),
            "the free plan allows at most 5 per line".to_owned()
        )]
    );

    // Reported together with the schema's and the plain checks' failures.
    let mut everything = big;
    everything["items"][0]["sku"] = json!("bad");
    for _ in 0..3 {
        everything["items"]
            .as_array_mut()
            .expect("items")
            .push(json!({"sku": "ABC-2", "qty": 1}));
    }
    let all = send("free", everything).await;
    let pointers = pointers_of(&all);
    assert!(
        pointers.contains(&"/items/0/sku".to_owned()),
        "{pointers:?}"
    );
    assert!(
        pointers.contains(&"/items/1/qty".to_owned()),
        "{pointers:?}"
    );
    assert!(pointers.contains(&"/items".to_owned()), "{pointers:?}");
    assert_eq!(calls.load(Ordering::SeqCst), 1, "only the pro order ran");
}

fn response_schema() -> JsonSchema {
    JsonSchema::new(&json!({
        "type": "object",
        "required": ["id", "total"],
        "properties": {
            "id": { "type": "string" },
            "total": { "type": "number", "minimum": 0 }
        },
        "additionalProperties": false
    }))
    .expect("a valid schema")
}

#[tokio::test]
async fn a_response_that_breaks_its_schema_is_a_500_and_an_error_log() {
    async fn answer(ctx: Context) -> Result<Response> {
        let body = match ctx.query("case") {
            Some("good") => json!({ "id": "o-1", "total": 12.5 }),
            _ => json!({ "id": "o-1", "total": -3, "cardNumber": "4111-SECRET" }),
        };
        Ok(Json(body).into_response())
    }
    async fn text(_ctx: Context) -> Result<&'static str> {
        Ok("4111-SECRET as text")
    }
    async fn nothing(_ctx: Context) -> Result<()> {
        Ok(())
    }
    async fn refused(_ctx: Context) -> Result<Json<Value>> {
        Err(Error::conflict("already placed"))
    }
    async fn binary(_ctx: Context) -> Result<Response> {
        let mut response = Response::new(Body::Binary(br#"{"id": 7, "total": 1}"#.to_vec()));
        response.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        Ok(response)
    }

    let layer = ValidationLayer::new().response(response_schema());
    let app = TestApp::new(
        App::new()
            .get("/orders", with_layer(answer, layer.clone()))
            .get("/text", with_layer(text, layer.clone()))
            .get("/nothing", with_layer(nothing, layer.clone()))
            .get("/refused", with_layer(refused, layer.clone()))
            .get("/binary", with_layer(binary, layer)),
    )
    .expect("app");

    let logs = Captured::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let good = app
        .http(events::http("GET", "/orders").query("case", "good").v2())
        .await
        .expect("response");
    assert_eq!(good.status, 200, "{}", good.text());
    assert_eq!(
        good.text(),
        r#"{"id":"o-1","total":12.5}"#,
        "passed through unchanged"
    );
    assert_eq!(good.header("content-type"), Some("application/json"));

    let bad = app
        .http(events::http("GET", "/orders").v2())
        .await
        .expect("response");
    assert_eq!(bad.status, 500);
    let error = error_of(&bad);
    assert_eq!(error["code"], "internal");
    assert_eq!(error["message"], "internal error");
    assert!(error.get("fields").is_none(), "{error}");
    assert!(!bad.text().contains("SECRET"), "{}", bad.text());
    assert!(!bad.text().contains("cardNumber"), "{}", bad.text());
    assert!(!bad.text().contains("-3"), "{}", bad.text());

    let log = logs.text();
    let line = log
        .lines()
        .find(|line| line.contains("ERROR") && line.contains("breaks its schema; it was not sent"))
        .unwrap_or_else(|| panic!("no ERROR event in {log}"));
    assert!(line.contains("lift::validation"), "{line}");
    assert!(
        line.contains("/total: value is less than the minimum of 0"),
        "{line}"
    );
    assert!(
        line.contains("/cardNumber: is not allowed (additional property)"),
        "{line}"
    );
    assert!(
        !log.contains("SECRET"),
        "the body's values are never logged: {log}"
    );

    let text = app
        .http(events::http("GET", "/text").v2())
        .await
        .expect("response");
    assert_eq!(
        text.status, 500,
        "a route with a response schema answers JSON"
    );
    assert!(!text.text().contains("SECRET"), "{}", text.text());
    assert!(
        logs.text().contains("text/plain; charset=utf-8`, not JSON"),
        "{}",
        logs.text()
    );

    let nothing = app
        .http(events::http("GET", "/nothing").v2())
        .await
        .expect("response");
    assert_eq!(nothing.status, 204, "a bodiless response passes");

    let refused = app
        .http(events::http("GET", "/refused").v2())
        .await
        .expect("response");
    assert_eq!(refused.status, 409, "an error passes in Lift's own shape");
    assert_eq!(error_of(&refused)["code"], "conflict");

    let binary = app
        .http(events::http("GET", "/binary").v2())
        .await
        .expect("response");
    assert_eq!(binary.status, 500, "a binary JSON body is validated too");
    assert!(
        logs.text().contains("/id: value is not of type"),
        "{}",
        logs.text()
    );
}

#[tokio::test]
async fn a_batch_reports_only_the_records_that_fail_validation() {
    let seen = Arc::new(Mutex::new(Vec::<String>::new()));
    let recorder = Arc::clone(&seen);
    let handler = move |ctx: Context| {
        let recorder = Arc::clone(&recorder);
        async move {
            let id = ctx
                .extensions()
                .get::<ValidatedJson>()
                .and_then(|v| v.value()["customer"]["id"].as_str().map(str::to_owned))
                .unwrap_or_default();
            if let Ok(mut seen) = recorder.lock() {
                seen.push(id);
            }
            Ok::<_, Error>(())
        }
    };
    let app = TestApp::new(App::new().sqs(with_layer(
        handler,
        ValidationLayer::new().request(order_schema()),
    )))
    .expect("app");
    let good = |id: &str| {
        json!({ "customer": { "id": id }, "items": [{ "sku": "ABC-1", "qty": 1 }] }).to_string()
    };
    let (first, third) = (good("c-0"), good("c-2"));
    let invalid = json!({ "customer": { "id": "c-1" }, "items": [] }).to_string();
    let bodies = [
        first.as_str(),
        invalid.as_str(),
        third.as_str(),
        "not json",
        "",
    ];
    let response = app
        .invoke(&events::sqs(bodies))
        .await
        .expect("batch response");
    assert_eq!(batch_failures(&response), ["m1", "m3", "m4"]);
    assert_eq!(*seen.lock().expect("lock"), ["c-0", "c-2"]);

    // EventBridge: the `detail` is the payload; an invalid one fails the invocation.
    let (handler, calls) = counting_handler();
    let events_app = TestApp::new(App::new().event(
        "shop",
        "OrderPlaced",
        with_layer(handler, ValidationLayer::new().request(order_schema())),
    ))
    .expect("app");
    let placed = events_app
        .invoke(&events::eventbridge("shop", "OrderPlaced", valid_order()))
        .await;
    assert!(placed.is_ok(), "{placed:?}");
    let broken = events_app
        .invoke(&events::eventbridge(
            "shop",
            "OrderPlaced",
            json!({ "items": [] }),
        ))
        .await;
    assert!(
        matches!(&broken, Err(Error::Validation(fields)) if fields.len() == 2),
        "{broken:?}"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);

    // SNS: the message is the payload.
    let (handler, calls) = counting_handler();
    let sns_app = TestApp::new(App::new().sns(with_layer(
        handler,
        ValidationLayer::new().request(order_schema()),
    )))
    .expect("app");
    let delivered = sns_app
        .invoke(&events::sns(&valid_order().to_string()))
        .await;
    assert!(delivered.is_ok(), "{delivered:?}");
    let refused = sns_app.invoke(&events::sns(r#"{"customer": 1}"#)).await;
    assert!(refused.is_err(), "{refused:?}");
    assert_eq!(calls.load(Ordering::SeqCst), 1);

    // DynamoDB Streams: the record's image (DynamoDB JSON) is the payload.
    let (handler, calls) = counting_handler();
    let stream_app = TestApp::new(App::new().dynamodb(with_layer(
        handler,
        ValidationLayer::new().request(order_schema()),
    )))
    .expect("app");
    let image = |qty: &str| {
        json!({
            "customer": { "M": { "id": { "S": "c-1" } } },
            "items": { "L": [{ "M": { "sku": { "S": "ABC-1" }, "qty": { "N": qty } } }] }
        })
    };
    let response = stream_app
        .invoke(&events::dynamodb([
            ("INSERT", image("2"), json!({})),
            ("MODIFY", image("0"), image("2")),
        ]))
        .await
        .expect("batch response");
    assert_eq!(batch_failures(&response), ["101"]);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn garde_custom_rules_on_typed_input_report_the_field_pointer() {
    fn even(value: &u32, _ctx: &()) -> garde::Result {
        if value.is_multiple_of(2) {
            Ok(())
        } else {
            Err(garde::Error::new("must be even (sold in pairs)"))
        }
    }
    fn not_reserved(value: &str, _ctx: &()) -> garde::Result {
        if value.eq_ignore_ascii_case("admin") {
            Err(garde::Error::new("is reserved"))
        } else {
            Ok(())
        }
    }
    #[derive(serde::Deserialize, garde::Validate)]
    struct Line {
        #[garde(length(min = 1))]
        #[allow(dead_code)]
        sku: String,
        #[garde(custom(even))]
        #[allow(dead_code)]
        qty: u32,
    }
    #[derive(serde::Deserialize, garde::Validate)]
    struct Order {
        #[garde(custom(not_reserved))]
        #[allow(dead_code)]
        customer: String,
        #[garde(dive)]
        #[allow(dead_code)]
        items: Vec<Line>,
    }
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&calls);
    let create = move |_ctx: Context, _order: Order| {
        counter.fetch_add(1, Ordering::SeqCst);
        std::future::ready(Ok::<_, Error>(()))
    };
    let app = TestApp::new(App::new().post("/orders", create)).expect("app");

    let ok = post(
        &app,
        &json!({ "customer": "c-1", "items": [{ "sku": "a", "qty": 2 }] }),
    )
    .await;
    assert_eq!(ok.status, 204, "{}", ok.text());

    let refused = post(
        &app,
        &json!({ "customer": "admin", "items": [{ "sku": "a", "qty": 2 }, { "sku": "b", "qty": 3 }] }),
    )
    .await;
    assert_eq!(refused.status, 422, "{}", refused.text());
    let mut fields = fields_of(&refused);
    fields.sort();
    assert_eq!(
        fields,
        [
            ("/customer".to_owned(), "is reserved".to_owned()),
            (
                "/items/1/qty".to_owned(),
                "must be even (sold in pairs)".to_owned()
            ),
        ]
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

/// A content-encoded body (JSON gzipped ahead of time) is not JSON to read as it is: it
/// passes unchecked rather than being refused as malformed with a 500.
#[tokio::test]
async fn an_encoded_response_passes_unchecked() {
    async fn gzipped(_ctx: Context) -> Result<Response> {
        let mut response = Response::new(Body::Binary(vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0]));
        response.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        response.headers_mut().insert(
            http::header::CONTENT_ENCODING,
            http::HeaderValue::from_static("gzip"),
        );
        Ok(response)
    }
    let layer = ValidationLayer::new().response(response_schema());
    let app = TestApp::new(App::new().get("/export", with_layer(gzipped, layer))).expect("app");
    let response = app
        .http(events::http("GET", "/export").v2())
        .await
        .expect("response");
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.header("content-encoding"), Some("gzip"));
}
