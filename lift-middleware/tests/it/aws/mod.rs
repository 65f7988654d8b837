//! The local emulator's DynamoDB, for the tests that need it: a real SDK client and a fresh
//! table per test.

use std::time::{SystemTime, UNIX_EPOCH};

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
};

/// A client of the emulator; fails loudly when the emulator is not configured.
pub(crate) async fn client() -> Client {
    assert!(
        std::env::var_os("AWS_ENDPOINT_URL").is_some(),
        "AWS_ENDPOINT_URL is not set: run scripts/test.sh, which starts the local emulator"
    );
    Client::new(lift_core::aws::sdk_config().await)
}

/// Creates a table with a string partition key `pk`, named `{prefix}-{unique}`.
pub(crate) async fn table(client: &Client, prefix: &str) -> String {
    table_keyed(client, prefix, "pk").await
}

/// Creates a table with the string partition key `key`, named `{prefix}-{unique}`.
pub(crate) async fn table_keyed(client: &Client, prefix: &str, key: &str) -> String {
    let name = format!(
        "{prefix}-{}",
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("time")
            .as_nanos()
    );
    client
        .create_table()
        .table_name(&name)
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name(key)
                .attribute_type(ScalarAttributeType::S)
                .build()
                .expect("attribute"),
        )
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name(key)
                .key_type(KeyType::Hash)
                .build()
                .expect("key"),
        )
        .billing_mode(BillingMode::PayPerRequest)
        .send()
        .await
        .expect("create table");
    name
}

/// Creates a table with the string partition key `pk` and string sort key `sk`, named
/// `{prefix}-{unique}`.
pub(crate) async fn table_with_sort_key(client: &Client, prefix: &str) -> String {
    let name = format!(
        "{prefix}-{}",
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("time")
            .as_nanos()
    );
    let attribute = |name: &str| {
        AttributeDefinition::builder()
            .attribute_name(name)
            .attribute_type(ScalarAttributeType::S)
            .build()
            .expect("attribute")
    };
    let key = |name: &str, kind: KeyType| {
        KeySchemaElement::builder()
            .attribute_name(name)
            .key_type(kind)
            .build()
            .expect("key")
    };
    client
        .create_table()
        .table_name(&name)
        .attribute_definitions(attribute("pk"))
        .attribute_definitions(attribute("sk"))
        .key_schema(key("pk", KeyType::Hash))
        .key_schema(key("sk", KeyType::Range))
        .billing_mode(BillingMode::PayPerRequest)
        .send()
        .await
        .expect("create table");
    name
}

/// A DynamoDB client whose endpoint accepts connections and never answers: a store that
/// does not respond. The listener lives as long as the returned task.
pub(crate) async fn silent_client() -> (Client, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("listener");
    let address = listener.local_addr().expect("address");
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let sdk = lift_core::aws::sdk_config().await;
    let config = aws_sdk_dynamodb::config::Builder::from(sdk)
        .endpoint_url(format!("http://{address}"))
        .build();
    (Client::from_conf(config), task)
}

/// Fails the next `failures` attempts of one DynamoDB operation (by its `X-Amz-Target`,
/// e.g. `DeleteItem`) before they are sent, as a dropped connection would, and counts every
/// attempt of it. Everything else reaches the emulator.
#[derive(Debug)]
pub(crate) struct FailCalls {
    operation: &'static str,
    failures: std::sync::atomic::AtomicU32,
    attempts: std::sync::atomic::AtomicU32,
    /// Let the failing attempts reach the emulator and lose their answer instead.
    after_sending: bool,
    /// The attempt in flight is to lose its answer.
    losing: std::sync::atomic::AtomicBool,
    /// Runs once an answer is lost, before the SDK sends the call again.
    before_retry: std::sync::Mutex<Option<Meanwhile>>,
    /// A lost answer keeps its status line and loses its body instead.
    body_lost: std::sync::atomic::AtomicBool,
}

/// What another writer does meanwhile.
struct Meanwhile(Box<dyn FnOnce() + Send>);

impl std::fmt::Debug for Meanwhile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Meanwhile")
    }
}

impl FailCalls {
    /// Attempts of the operation so far.
    pub(crate) fn attempts(&self) -> u32 {
        self.attempts.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The next `n` attempts fail (or lose their answer) as the first ones did.
    pub(crate) fn fail_next(&self, n: u32) {
        self.failures.store(n, std::sync::atomic::Ordering::SeqCst);
    }

    /// Lost answers keep their `200` and lose their body (a connection reset mid-body).
    pub(crate) fn lose_bodies(&self) {
        self.body_lost
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    fn run_meanwhile(&self) {
        let meanwhile = self.before_retry.lock().expect("lock").take();
        if let Some(Meanwhile(work)) = meanwhile {
            work();
        }
    }

    /// Runs `work` (blocking: the SDK waits) once the next answer is lost, before the SDK
    /// sends the call again: what another writer does in between.
    pub(crate) fn before_the_retry(&self, work: impl FnOnce() + Send + 'static) {
        *self.before_retry.lock().expect("lock") = Some(Meanwhile(Box::new(work)));
    }
}

#[derive(Debug, Clone)]
struct FailCallsInterceptor(std::sync::Arc<FailCalls>);

impl aws_sdk_dynamodb::config::Intercept for FailCallsInterceptor {
    fn name(&self) -> &'static str {
        "FailCalls"
    }

    fn read_before_transmit(
        &self,
        context: &aws_sdk_dynamodb::config::interceptors::BeforeTransmitInterceptorContextRef<'_>,
        _: &aws_sdk_dynamodb::config::RuntimeComponents,
        _: &mut aws_sdk_dynamodb::config::ConfigBag,
    ) -> Result<(), aws_sdk_dynamodb::error::BoxError> {
        use std::sync::atomic::Ordering;
        let target = context
            .request()
            .headers()
            .get("x-amz-target")
            .unwrap_or_default();
        if !target.ends_with(&format!(".{}", self.0.operation)) {
            return Ok(());
        }
        self.0.attempts.fetch_add(1, Ordering::SeqCst);
        let fail = self
            .0
            .failures
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if fail && self.0.after_sending {
            self.0.losing.store(true, Ordering::SeqCst);
        } else if fail {
            return Err("injected: the connection was reset".into());
        }
        Ok(())
    }

    fn modify_before_deserialization(
        &self,
        context: &mut aws_sdk_dynamodb::config::interceptors::BeforeDeserializationInterceptorContextMut<'_>,
        _: &aws_sdk_dynamodb::config::RuntimeComponents,
        _: &mut aws_sdk_dynamodb::config::ConfigBag,
    ) -> Result<(), aws_sdk_dynamodb::error::BoxError> {
        // Applied, but the caller hears a server fault (which the SDK retries).
        use std::sync::atomic::Ordering;
        if !self.0.body_lost.load(Ordering::SeqCst) && self.0.losing.swap(false, Ordering::SeqCst) {
            *context.response_mut().status_mut() = 500.try_into()?;
            self.0.run_meanwhile();
        }
        Ok(())
    }

    fn modify_before_attempt_completion(
        &self,
        context: &mut aws_sdk_dynamodb::config::interceptors::FinalizerInterceptorContextMut<'_>,
        _: &aws_sdk_dynamodb::config::RuntimeComponents,
        _: &mut aws_sdk_dynamodb::config::ConfigBag,
    ) -> Result<(), aws_sdk_dynamodb::error::BoxError> {
        // Applied and answered 200, but the body never arrives (which the SDK retries).
        use std::sync::atomic::Ordering;
        if self.0.body_lost.load(Ordering::SeqCst) && self.0.losing.swap(false, Ordering::SeqCst) {
            if let Some(outcome) = context.output_or_error_mut() {
                *outcome = Err(
                    aws_smithy_runtime_api::client::orchestrator::OrchestratorError::response(
                        "injected: the connection was reset in the body".into(),
                    ),
                );
            }
            self.0.run_meanwhile();
        }
        Ok(())
    }
}

/// A client of the emulator whose next `failures` attempts of `operation` fail.
pub(crate) async fn failing_client(
    operation: &'static str,
    failures: u32,
) -> (Client, std::sync::Arc<FailCalls>) {
    intercepted_client(operation, failures, None).await
}

/// A client of the emulator whose next `losses` attempts of `operation` are applied by the
/// emulator but answered with a 500, as when the answer is lost on its way back.
pub(crate) async fn answer_losing_client(
    operation: &'static str,
    losses: u32,
) -> (Client, std::sync::Arc<FailCalls>) {
    // The SDK's retry of a lost answer comes at once, well within the stores' own time
    // limits (its default backoff is up to a second, past some of them).
    let retry = aws_sdk_dynamodb::config::retry::RetryConfig::standard()
        .with_initial_backoff(std::time::Duration::from_millis(1));
    intercepted_client(operation, losses, Some(retry)).await
}

/// [`answer_losing_client`] that does not retry: the call ends in an error with its write
/// applied, as when a store's own time limit passes before the SDK's retry.
pub(crate) async fn answer_losing_client_without_retry(
    operation: &'static str,
    losses: u32,
) -> (Client, std::sync::Arc<FailCalls>) {
    let retry = aws_sdk_dynamodb::config::retry::RetryConfig::disabled();
    intercepted_client(operation, losses, Some(retry)).await
}

/// A client whose next `failures` attempts of `operation` fail: before they are sent, or,
/// with a `retry` config, after they were applied (their answer lost).
async fn intercepted_client(
    operation: &'static str,
    failures: u32,
    retry: Option<aws_sdk_dynamodb::config::retry::RetryConfig>,
) -> (Client, std::sync::Arc<FailCalls>) {
    let after_sending = retry.is_some();
    let calls = std::sync::Arc::new(FailCalls {
        operation,
        failures: std::sync::atomic::AtomicU32::new(failures),
        attempts: std::sync::atomic::AtomicU32::new(0),
        after_sending,
        losing: std::sync::atomic::AtomicBool::new(false),
        before_retry: std::sync::Mutex::new(None),
        body_lost: std::sync::atomic::AtomicBool::new(false),
    });
    let sdk = lift_core::aws::sdk_config().await;
    let mut config = aws_sdk_dynamodb::config::Builder::from(sdk)
        .interceptor(FailCallsInterceptor(calls.clone()));
    if let Some(retry) = retry {
        config = config.retry_config(retry);
    }
    (Client::from_conf(config.build()), calls)
}
