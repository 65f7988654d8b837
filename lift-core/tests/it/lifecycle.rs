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

#[tokio::test]
async fn shutting_down_waits_for_the_tasks_to_finish_their_work() {
    let (done_tx, mut done_rx) = mpsc::unbounded_channel();
    let app = App::new()
        .get("/hello", hello)
        .background(move |lifecycle| async move {
            lifecycle.shutdown().await;
            // The last word: a lease released, a buffer flushed.
            tokio::task::yield_now().await;
            let _ = done_tx.send("released");
        });
    let app = TestApp::new(app).expect("app");
    app.service().start_background();
    assert!(
        app.service().shut_down(Duration::from_secs(5)).await,
        "the task finished within the grace period"
    );
    assert_eq!(done_rx.try_recv(), Ok("released"));

    // A task that ignores the signal is not waited for beyond the grace period.
    let stubborn = TestApp::new(
        App::new()
            .get("/hello", hello)
            .background(|_| std::future::pending::<()>()),
    )
    .expect("app");
    stubborn.service().start_background();
    tokio::time::pause();
    assert!(
        !stubborn
            .service()
            .shut_down(Duration::from_millis(400))
            .await
    );
}
