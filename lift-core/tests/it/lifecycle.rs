//! Background tasks started with the App: they see the first invocation's ARN, run beside
//! invocations without delaying them, and start once.

use std::time::Duration;

use lift_core::testing::{TestApp, events, lambda_context};
use lift_core::{App, Context, Result};
use tokio::sync::{mpsc, oneshot};

async fn hello(_ctx: Context) -> Result<&'static str> {
    Ok("hello")
}

#[tokio::test]
async fn a_background_task_sees_the_first_invocation_and_never_delays_it() {
    let (seen_tx, mut seen_rx) = mpsc::unbounded_channel();
    let (gate_tx, gate_rx) = oneshot::channel::<()>();
    let app = App::new()
        .get("/hello", hello)
        .background(move |lifecycle| async move {
            let first = lifecycle.first_invocation().await;
            let _ = seen_tx.send(first);
            // Work that outlives the invocation: it holds until the test opens the gate.
            let _ = gate_rx.await;
            let _ = seen_tx.send(lift_core::lifecycle::FirstInvocation::new(
                "done",
                "",
                lifecycle.invocations().to_string(),
            ));
        });
    let app = TestApp::new(app).expect("app");
    assert_eq!(app.service().start_background(), 1);
    assert_eq!(app.service().start_background(), 0, "tasks start once");

    let mut context = lambda_context("first");
    context.invoked_function_arn =
        "arn:aws:lambda:eu-west-1:123456789012:function:payments:live".to_owned();
    let event = events::http("GET", "/hello").v2();
    // The task is parked on the gate: the invocations answer all the same.
    let response = app.invoke_with(&event, context).await.expect("first");
    assert_eq!(response["statusCode"], 200);
    let first = tokio::time::timeout(Duration::from_secs(5), seen_rx.recv())
        .await
        .expect("the task saw the first invocation")
        .expect("sent");
    assert_eq!(
        first.invoked_function_arn,
        "arn:aws:lambda:eu-west-1:123456789012:function:payments:live"
    );
    assert_eq!(first.function_name, "lift-test");
    app.http(events::http("GET", "/hello").v2())
        .await
        .expect("second");
    assert_eq!(app.service().lifecycle().invocations(), 2);

    gate_tx.send(()).expect("task waiting");
    let done = tokio::time::timeout(Duration::from_secs(5), seen_rx.recv())
        .await
        .expect("the task finished after the invocations")
        .expect("sent");
    assert_eq!(done.invoked_function_arn, "done");
    assert_eq!(done.function_version, "2");
}
