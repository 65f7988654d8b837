//! Every real Lambda payload in the shared fixtures folder, parsed and routed through echo.

use std::path::PathBuf;

use aws_lambda_events::alb::AlbTargetGroupRequest;
use aws_lambda_events::apigw::{ApiGatewayProxyRequest, ApiGatewayV2httpRequest};
use aws_lambda_events::dynamodb::Event as DynamoDbEvent;
use aws_lambda_events::eventbridge::EventBridgeEvent;
use aws_lambda_events::sns::SnsEvent;
use aws_lambda_events::sqs::SqsEvent;
use lift_core::testing::{HttpResponse, TestApp, batch_failures, fixture};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures/events")
}

fn load(name: &str) -> Value {
    fixture(fixtures_dir().join(name)).expect("fixture")
}

fn echo() -> TestApp {
    TestApp::new(echo::app()).expect("echo app")
}

/// Parse with the Lambda event type, serialize, reparse: nothing is lost on the way.
fn round_trips<T: DeserializeOwned + Serialize + PartialEq + std::fmt::Debug>(name: &str) {
    let parsed: T = serde_json::from_value(load(name)).expect("parses");
    let text = serde_json::to_string(&parsed).expect("serializes");
    let reparsed: T = serde_json::from_str(&text).expect("reparses");
    assert_eq!(parsed, reparsed, "{name}");
}

#[test]
fn every_fixture_round_trips_through_its_lambda_type() {
    round_trips::<AlbTargetGroupRequest>("example-alb-lambda-target-request-headers-only.json");
    round_trips::<ApiGatewayProxyRequest>("example-apigw-request.json");
    round_trips::<ApiGatewayV2httpRequest>("example-apigw-sam-http-request.json");
    round_trips::<ApiGatewayV2httpRequest>("example-apigw-v2-request-jwt-authorizer.json");
    round_trips::<ApiGatewayV2httpRequest>("example-apigw-v2-request-no-authorizer.json");
    round_trips::<DynamoDbEvent>("example-dynamodb-event.json");
    round_trips::<EventBridgeEvent>("example-eventbridge-event-obj.json");
    round_trips::<EventBridgeEvent>("example-eventbridge-schedule.json");
    round_trips::<SnsEvent>("example-sns-event.json");
    round_trips::<SqsEvent>("example-sqs-event-obj.json");
    round_trips::<SqsEvent>("example-sqs-event.json");
}

#[tokio::test]
async fn every_fixture_in_the_folder_is_routed() {
    let app = echo();
    let mut seen = 0;
    for entry in std::fs::read_dir(fixtures_dir()).expect("fixtures folder") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "json") {
            let event = fixture(&path).expect("fixture");
            let response = app.invoke(&event).await;
            assert!(response.is_ok(), "{}: {response:?}", path.display());
            seen += 1;
        }
    }
    assert!(seen >= 11, "only {seen} fixtures found");
}

async fn http(name: &str) -> Value {
    let response = echo().http(load(name)).await.expect("http response");
    assert_eq!(response.status, 200, "{name}: {}", response.text());
    response.json().expect("json body")
}

#[tokio::test]
async fn alb_fixture() {
    let body = http("example-alb-lambda-target-request-headers-only.json").await;
    assert_eq!(body["source"], "alb");
    assert_eq!(body["method"], "GET");
    assert_eq!(body["path"], "/");
    assert_eq!(body["query"], json!({"key": ["hello"]}));
    assert_eq!(body["headers"]["user-agent"], json!(["curl/7.54.0"]));
    // Single-value ALB events get single-value responses.
    let raw = echo()
        .invoke(&load("example-alb-lambda-target-request-headers-only.json"))
        .await
        .expect("response");
    assert!(raw.get("multiValueHeaders").is_none());
    assert_eq!(raw["statusDescription"], "200 OK");
}

#[tokio::test]
async fn rest_api_fixture() {
    let body = http("example-apigw-request.json").await;
    assert_eq!(body["source"], "apigw_v1");
    assert_eq!(body["method"], "POST");
    assert_eq!(body["path"], "/hello/world");
    assert_eq!(body["query"], json!({"name": ["me"]}));
    assert_eq!(body["headers"]["content-type"], json!(["application/json"]));
    assert_eq!(body["body"], "{\r\n\t\"a\": 1\r\n}");
    let raw = echo()
        .invoke(&load("example-apigw-request.json"))
        .await
        .expect("response");
    let response = HttpResponse::from_value(&raw).expect("http");
    assert!(
        response.multi_value,
        "REST events get multiValueHeaders back"
    );
}

#[tokio::test]
async fn http_api_fixtures() {
    let jwt = http("example-apigw-v2-request-jwt-authorizer.json").await;
    assert_eq!(jwt["source"], "apigw_v2");
    assert_eq!(jwt["path"], "/my/path");
    assert_eq!(
        jwt["query"],
        json!({"parameter1": ["value1", "value2"], "parameter2": ["value"]})
    );
    assert_eq!(jwt["headers"]["cookie"], json!(["cookie1; cookie2"]));
    assert_eq!(jwt["body"], "{\r\n\t\"a\": 1\r\n}");

    let plain = http("example-apigw-v2-request-no-authorizer.json").await;
    assert_eq!(plain["method"], "GET");
    assert_eq!(plain["path"], "/");
    assert_eq!(plain["query"], json!({}));

    let sam = http("example-apigw-sam-http-request.json").await;
    assert_eq!(sam["source"], "apigw_v2");
    assert_eq!(sam["query"], json!({"foo": ["bar"]}));
}

#[tokio::test]
async fn sqs_fixtures_and_failures() {
    let app = echo();
    for name in ["example-sqs-event.json", "example-sqs-event-obj.json"] {
        let response = app.invoke(&load(name)).await.expect("batch");
        assert_eq!(batch_failures(&response), Vec::<String>::new(), "{name}");
    }
    let mut event = load("example-sqs-event.json");
    let mut second = event["Records"][0].clone();
    second["messageId"] = json!("MessageID_2");
    second["body"] = json!("please fail this one");
    event["Records"]
        .as_array_mut()
        .expect("records")
        .push(second);
    let response = app.invoke(&event).await.expect("batch");
    assert_eq!(batch_failures(&response), ["MessageID_2"]);
}

#[tokio::test]
async fn dynamodb_fixture_and_remove_records() {
    let app = echo();
    let response = app
        .invoke(&load("example-dynamodb-event.json"))
        .await
        .expect("batch");
    assert_eq!(batch_failures(&response), Vec::<String>::new());
    let mut event = load("example-dynamodb-event.json");
    event["Records"][1]["eventName"] = json!("REMOVE");
    event["Records"][1]["dynamodb"]["SequenceNumber"] = json!("999");
    let response = app.invoke(&event).await.expect("batch");
    assert_eq!(batch_failures(&response), ["999"]);
}

#[tokio::test]
async fn sns_fixture() {
    let event = load("example-sns-event.json");
    let id = event["Records"][0]["Sns"]["MessageId"].clone();
    let response = echo().invoke(&event).await.expect("sns");
    assert_eq!(response, json!({"source": "sns", "message_ids": [id]}));
}

#[tokio::test]
async fn eventbridge_fixtures() {
    for name in [
        "example-eventbridge-event-obj.json",
        "example-eventbridge-schedule.json",
    ] {
        let event = load(name);
        let response = echo().invoke(&event).await.expect("event");
        assert_eq!(
            response,
            json!({
                "source": "eventbridge",
                "event_source": event["source"],
                "detail_type": event["detail-type"],
                "id": event["id"],
            }),
            "{name}"
        );
    }
}
