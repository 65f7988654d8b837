//! The Lambda transport against Lambda on the local emulator: what an `Invoke` Lambda
//! refused means for the call, and one invocation per attempt.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use aws_sdk_lambda::config::interceptors::{
    BeforeDeserializationInterceptorContextMut, BeforeTransmitInterceptorContextRef,
};
use aws_sdk_lambda::config::{ConfigBag, Intercept, RuntimeComponents};
use lift_services::transport::{
    LambdaTransport, Outbound, ServiceRequest, Transport, TransportError,
};
use lift_services::{Endpoints, Instance};

/// Counts attempts, and answers the first with a 500 (as a Lambda service fault would).
#[derive(Debug, Default)]
struct FirstFails {
    attempts: AtomicU32,
}

#[derive(Debug, Clone)]
struct FirstFailsInterceptor(Arc<FirstFails>);

impl Intercept for FirstFailsInterceptor {
    fn name(&self) -> &'static str {
        "FirstFails"
    }

    fn read_before_transmit(
        &self,
        _: &BeforeTransmitInterceptorContextRef<'_>,
        _: &RuntimeComponents,
        _: &mut ConfigBag,
    ) -> Result<(), aws_sdk_lambda::error::BoxError> {
        self.0.attempts.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    fn modify_before_deserialization(
        &self,
        context: &mut BeforeDeserializationInterceptorContextMut<'_>,
        _: &RuntimeComponents,
        _: &mut ConfigBag,
    ) -> Result<(), aws_sdk_lambda::error::BoxError> {
        if self.0.attempts.load(Ordering::SeqCst) == 1 {
            *context.response_mut().status_mut() = 500.try_into()?;
        }
        Ok(())
    }
}

async fn lambda(interceptor: Option<FirstFailsInterceptor>) -> aws_sdk_lambda::Client {
    assert!(
        std::env::var_os("AWS_ENDPOINT_URL").is_some(),
        "AWS_ENDPOINT_URL is not set: run scripts/test.sh, which starts the local emulator"
    );
    let mut config = aws_sdk_lambda::config::Builder::from(lift_core::aws::sdk_config().await);
    if let Some(interceptor) = interceptor {
        config = config.interceptor(interceptor);
    }
    aws_sdk_lambda::Client::from_conf(config.build())
}

/// A call to an alias of a function the emulator does not have.
fn call_to_missing_function(idempotent: bool) -> Outbound {
    let arn = format!(
        "arn:aws:lambda:us-east-1:000000000000:function:missing-{:08x}:live",
        fastrand::u32(..)
    );
    Outbound {
        instance: Arc::new(Instance::new(
            "payments",
            "missing:live@us-east-1",
            "us-east-1",
            Endpoints::lambda(arn),
        )),
        request: Arc::new(ServiceRequest::post("/charges").idempotent(idempotent)),
        caller: None,
    }
}

/// A function Lambda cannot find ran nothing: the transport says so, and the client may
/// send even a request that is not idempotent to another instance.
#[tokio::test]
async fn an_invocation_lambda_refused_before_running_is_not_invoked() {
    let transport = LambdaTransport::new(lambda(None).await);
    let error = transport
        .send(call_to_missing_function(false))
        .await
        .expect_err("no such function");
    assert!(
        matches!(
            error.downcast_ref::<TransportError>(),
            Some(TransportError::NotInvoked { .. })
        ),
        "{error:?}"
    );
}

/// The SDK's own retries would invoke again inside one attempt of the client, which alone
/// decides what may be sent twice: a failed invocation is one invocation.
#[tokio::test]
async fn an_attempt_is_one_invocation() {
    let counted = Arc::new(FirstFails::default());
    let transport =
        LambdaTransport::new(lambda(Some(FirstFailsInterceptor(counted.clone()))).await);
    let error = transport
        .send(call_to_missing_function(false))
        .await
        .expect_err("a service fault");
    assert_eq!(
        counted.attempts.load(Ordering::SeqCst),
        1,
        "invoked once: {error:?}"
    );
}

/// Answers every attempt as Lambda does a caller without `lambda:InvokeFunction` on the
/// function: a 403 `AccessDeniedException`.
#[derive(Debug, Clone)]
struct AccessDenied;

impl Intercept for AccessDenied {
    fn name(&self) -> &'static str {
        "AccessDenied"
    }

    fn modify_before_deserialization(
        &self,
        context: &mut BeforeDeserializationInterceptorContextMut<'_>,
        _: &RuntimeComponents,
        _: &mut ConfigBag,
    ) -> Result<(), aws_sdk_lambda::error::BoxError> {
        let response = context.response_mut();
        *response.status_mut() = 403.try_into()?;
        response
            .headers_mut()
            .insert("x-amzn-errortype", "AccessDeniedException");
        Ok(())
    }
}

/// Lambda refusing the caller (no permission to invoke) ran nothing: the transport says so,
/// with Lambda's code, rather than an error that may have run, so the client may send even
/// a POST to another instance and does not count it in the instance's breaker.
#[tokio::test]
async fn an_invocation_refused_to_the_caller_is_unauthorized() {
    let mut config = aws_sdk_lambda::config::Builder::from(lift_core::aws::sdk_config().await);
    config = config.interceptor(AccessDenied);
    let transport = LambdaTransport::new(aws_sdk_lambda::Client::from_conf(config.build()));
    let error = transport
        .send(call_to_missing_function(true))
        .await
        .expect_err("refused");
    match error.downcast_ref::<TransportError>() {
        Some(TransportError::Unauthorized { code, .. }) => {
            assert_eq!(code, "AccessDeniedException");
        }
        other => panic!("expected Unauthorized, got {other:?} ({error:?})"),
    }
}

/// Records the region each request was signed for (its credential scope).
#[derive(Debug, Clone, Default)]
struct SignedFor(Arc<std::sync::Mutex<Vec<String>>>);

impl Intercept for SignedFor {
    fn name(&self) -> &'static str {
        "SignedFor"
    }

    fn read_before_transmit(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _: &RuntimeComponents,
        _: &mut ConfigBag,
    ) -> Result<(), aws_sdk_lambda::error::BoxError> {
        let authorization = context
            .request()
            .headers()
            .get("authorization")
            .unwrap_or_default();
        // `Credential=<key>/<date>/<region>/lambda/aws4_request`
        let region = authorization
            .split("Credential=")
            .nth(1)
            .and_then(|scope| scope.split('/').nth(2))
            .unwrap_or_default();
        self.0.lock().expect("regions").push(region.to_owned());
        Ok(())
    }
}

/// Lambda invokes only functions of the region it is called in: an instance registered in
/// another region is invoked there, not through the caller's region (where Lambda would
/// answer that it has no such function, and the healthy instance would be blamed).
#[tokio::test]
async fn an_instance_in_another_region_is_invoked_in_its_region() {
    let signed = SignedFor::default();
    let config = aws_sdk_lambda::config::Builder::from(lift_core::aws::sdk_config().await)
        .region(aws_sdk_lambda::config::Region::new("us-east-1"))
        .interceptor(signed.clone());
    let transport = LambdaTransport::new(aws_sdk_lambda::Client::from_conf(config.build()));
    for region in ["eu-west-1", "us-east-1"] {
        let arn = format!(
            "arn:aws:lambda:{region}:000000000000:function:missing-{:08x}:live",
            fastrand::u32(..)
        );
        let call = Outbound {
            instance: Arc::new(Instance::new(
                "payments",
                format!("missing:live@{region}"),
                region,
                Endpoints::lambda(arn),
            )),
            request: Arc::new(ServiceRequest::get("/charges")),
            caller: None,
        };
        let _ = transport.send(call).await;
    }
    assert_eq!(
        *signed.0.lock().expect("regions"),
        ["eu-west-1", "us-east-1"]
    );
}
