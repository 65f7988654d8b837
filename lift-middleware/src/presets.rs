//! Named, ready-made configurations with documented defaults, for Lift [`Context`]s.
//!
//! | preset | what it is |
//! |---|---|
//! | [`basic_breaker`] | one breaker: 5 failures in a row, or 50% of the last 50 calls once 10 were seen; open 30 s, doubling on repeated trips up to 5 min; 1 probe at a time, closes after 2 successes |
//! | [`per_tenant_breaker`] | the same, one per tenant ([`Context::tenant`]), at most 10 000 tenants, idle ones dropped after 10 min |
//! | [`per_operation_breaker`] | the same, one per operation ([`operation`]: method and route, or the event source) |
//! | [`basic_bulkhead`] | `max` calls at once, no queue |
//! | [`tenant_isolated_bulkhead`] | `max` at once in all, `per_tenant` for each tenant |
//! | [`operation_isolated_bulkhead`] | `max` at once in all, `per_operation` for each operation |
//! | [`priority_bulkhead`] | `max` at once, `reserved` of them for high priority, a queue of `max` waiting up to 100 ms |
//! | [`http_retry`] / [`database_retry`] | [`RetryConfig::http`] / [`RetryConfig::database`] |
//! | [`dynamodb_retry`] | [`RetryConfig::database`] with DynamoDB's transient errors retried and failed conditions never |
//!
//! Key functions for keyed layers (breakers, bulkheads, local and distributed rate limits):
//! [`tenant`], [`operation`], [`client_ip`], [`api_key`], [`user`].
//!
//! # Order
//! Outermost first: load shed → rate limit → bulkhead → circuit breaker → timeout → retry.
//! Cheap refusals come first; the breaker sees one outcome per call, not one per attempt
//! when it wraps the retry (put the breaker inside the retry to count attempts instead);
//! the timeout bounds the whole retried call.

use std::time::Duration;

use lift_core::Context;

use crate::ConfigError;
use crate::bulkhead::{BulkheadConfig, BulkheadLayer};
use crate::circuit_breaker::NoFallback;
use crate::circuit_breaker::{CircuitBreakerConfig, CircuitBreakerLayer};
use crate::classify::DefaultClassifier;
use crate::retry::{RetryConfig, RetryLayer};

/// A key function over a Lift [`Context`].
pub type ContextKey = fn(&Context) -> Option<String>;

/// The tenant of the request, once tenancy middleware resolved one.
pub fn tenant(ctx: &Context) -> Option<String> {
    ctx.tenant().map(str::to_owned)
}

/// The operation: `METHOD /route` for HTTP, the source (and `detail-type`) for events.
pub fn operation(ctx: &Context) -> Option<String> {
    if let Some(request) = ctx.http() {
        return Some(format!(
            "{} {}",
            request.method(),
            ctx.route().unwrap_or("(no route)")
        ));
    }
    #[cfg(feature = "source-eventbridge")]
    if let Some(event) = ctx.eventbridge_event() {
        return Some(format!("{}/{}", event.source, event.detail_type));
    }
    Some(ctx.source().as_str().to_owned())
}

/// The client's IP address: API Gateway's (and Function URLs') `sourceIp`; behind an ALB
/// that faces clients directly, the `x-forwarded-for` entry the ALB appended, which is the
/// last one. Entries before it are whatever the client sent and are never used: a client
/// that writes its own `x-forwarded-for` does not get a key of its choosing. With proxies
/// in front of the ALB (a CDN, another load balancer), use [`ClientIp::behind`].
pub fn client_ip(ctx: &Context) -> Option<String> {
    ClientIp::default().of(ctx)
}

/// The client's IP address behind a known number of trusted proxies in front of an ALB;
/// a key function for keyed layers.
///
/// Each hop appends the address it received the request from to `x-forwarded-for`, so
/// the client's address is the entry `trusted_proxies` places before the last (the ALB's
/// own). Requests from API Gateway and Function URLs use their `sourceIp`.
///
/// ```
/// use lift_middleware::presets::ClientIp;
/// use lift_middleware::rate_limit::RateLimitLayer;
/// use std::num::NonZeroU32;
///
/// // CloudFront in front of the ALB: one trusted proxy.
/// let per_ip = RateLimitLayer::per_second(NonZeroU32::MIN).keyed(ClientIp::behind(1), 10_000);
/// # let _ = per_ip;
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClientIp {
    trusted_proxies: usize,
}

impl ClientIp {
    /// The client's address with `trusted_proxies` proxies between it and the ALB.
    pub const fn behind(trusted_proxies: usize) -> Self {
        ClientIp { trusted_proxies }
    }

    /// The client's address for this request, if it has one.
    pub fn of(&self, ctx: &Context) -> Option<String> {
        use lambda_http::request::RequestContext;
        let request = ctx.http()?;
        match request.request_context() {
            RequestContext::ApiGatewayV2(c) => c.http.source_ip.clone(),
            RequestContext::ApiGatewayV1(c) => c.identity.source_ip.clone(),
            _ => {
                // Every `X-Forwarded-For` line, in order, as one list (as HTTP reads repeated
                // header lines), split as bytes: the client writes the lines before the
                // trusted hops' entries, and a byte it writes that is not visible ASCII must
                // not make the whole list unreadable (no key, the bucket of key-less calls).
                let entries: Vec<&[u8]> = request
                    .headers()
                    .get_all("x-forwarded-for")
                    .iter()
                    .flat_map(|line| line.as_bytes().split(|b| *b == b','))
                    .map(<[u8]>::trim_ascii)
                    .collect();
                // Fewer entries than trusted hops: every entry was written by a trusted
                // hop, and the first is the farthest one known.
                let index = entries.len().saturating_sub(1 + self.trusted_proxies);
                let entry = std::str::from_utf8(entries.get(index)?).ok()?;
                // An ALB that preserves the client's port writes `ip:port` (`[ip]:port`).
                entry
                    .parse::<std::net::IpAddr>()
                    .or_else(|_| entry.parse::<std::net::SocketAddr>().map(|a| a.ip()))
                    .ok()
                    .map(|ip| ip.to_string())
            }
        }
    }
}

impl crate::classify::KeyOf<Context> for ClientIp {
    fn key_of(&self, ctx: &Context) -> Option<String> {
        self.of(ctx)
    }
}

/// The `x-api-key` header.
pub fn api_key(ctx: &Context) -> Option<String> {
    ctx.header("x-api-key").map(str::to_owned)
}

/// The authenticated user, as API Gateway's authorizer saw it: the JWT's `sub` claim, or a
/// Lambda authorizer's `principalId`.
pub fn user(ctx: &Context) -> Option<String> {
    let authorizer = ctx.http()?.request_context().authorizer()?;
    if let Some(sub) = authorizer
        .jwt
        .as_ref()
        .and_then(|jwt| jwt.claims.get("sub"))
    {
        return Some(sub.clone());
    }
    authorizer
        .fields
        .get("principalId")
        .and_then(|v| v.as_str())
        .map(str::to_owned)
}

fn breaker_config(name: &str) -> Result<CircuitBreakerConfig, ConfigError> {
    CircuitBreakerConfig::builder(name)
        .consecutive_failures(5)
        .failure_rate(0.5)
        .min_calls(10)
        .window(crate::circuit_breaker::Window::Count {
            size: std::num::NonZeroU32::new(50).unwrap_or(std::num::NonZeroU32::MIN),
        })
        .open_for(Duration::from_secs(30))
        .open_backoff(2.0, Duration::from_secs(300))
        .half_open(1, 2)
        .build()
}

/// One breaker for every call (see the table above).
///
/// # Errors
/// Never with these values; the `Result` keeps presets and hand-made configs alike.
pub fn basic_breaker(name: &str) -> Result<CircuitBreakerLayer, ConfigError> {
    Ok(CircuitBreakerLayer::new(breaker_config(name)?))
}

/// One breaker per tenant.
///
/// # Errors
/// Never with these values.
pub fn per_tenant_breaker(
    name: &str,
) -> Result<CircuitBreakerLayer<DefaultClassifier, ContextKey, NoFallback>, ConfigError> {
    CircuitBreakerLayer::builder(breaker_config(name)?)
        .keyed(tenant as ContextKey, 10_000, Duration::from_secs(600))
        .build()
}

/// One breaker per operation.
///
/// # Errors
/// Never with these values.
pub fn per_operation_breaker(
    name: &str,
) -> Result<CircuitBreakerLayer<DefaultClassifier, ContextKey, NoFallback>, ConfigError> {
    CircuitBreakerLayer::builder(breaker_config(name)?)
        .keyed(operation as ContextKey, 1_000, Duration::from_secs(600))
        .build()
}

/// At most `max` calls at once, no queue.
///
/// # Errors
/// [`ConfigError`] when `max` is 0.
pub fn basic_bulkhead(name: &str, max: u32) -> Result<BulkheadLayer, ConfigError> {
    Ok(BulkheadLayer::new(
        BulkheadConfig::builder(name).max_concurrent(max).build()?,
    ))
}

/// At most `max` calls at once, and `per_tenant` for any one tenant.
///
/// # Errors
/// [`ConfigError`] when a limit is 0.
pub fn tenant_isolated_bulkhead(
    name: &str,
    max: u32,
    per_tenant: u32,
) -> Result<BulkheadLayer<ContextKey>, ConfigError> {
    let per_key = BulkheadConfig::builder(name)
        .max_concurrent(per_tenant)
        .build()?;
    Ok(basic_bulkhead(name, max)?.keyed(
        tenant as ContextKey,
        per_key,
        10_000,
        Duration::from_secs(600),
    ))
}

/// At most `max` calls at once, and `per_operation` for any one operation.
///
/// # Errors
/// [`ConfigError`] when a limit is 0.
pub fn operation_isolated_bulkhead(
    name: &str,
    max: u32,
    per_operation: u32,
) -> Result<BulkheadLayer<ContextKey>, ConfigError> {
    let per_key = BulkheadConfig::builder(name)
        .max_concurrent(per_operation)
        .build()?;
    Ok(basic_bulkhead(name, max)?.keyed(
        operation as ContextKey,
        per_key,
        1_000,
        Duration::from_secs(600),
    ))
}

/// At most `max` calls at once, `reserved` of them for high priority, a queue of `max`
/// waiting up to 100 ms (low priority never waits).
///
/// # Errors
/// [`ConfigError`] when `reserved >= max`.
pub fn priority_bulkhead(
    name: &str,
    max: u32,
    reserved: u32,
) -> Result<BulkheadLayer, ConfigError> {
    Ok(BulkheadLayer::new(
        BulkheadConfig::builder(name)
            .max_concurrent(max)
            .reserve_for_high(reserved)
            .queue(max, Duration::from_millis(100))
            .build()?,
    ))
}

/// Retries for outbound HTTP calls ([`RetryConfig::http`]).
pub fn http_retry() -> RetryLayer {
    RetryLayer::new(RetryConfig::http())
}

/// Retries for database calls ([`RetryConfig::database`]).
pub fn database_retry() -> RetryLayer {
    RetryLayer::new(RetryConfig::database())
}

#[cfg(feature = "dynamodb")]
/// Retries for DynamoDB calls: [`RetryConfig::database`] with the
/// [`DynamoDbPolicy`](crate::retry::dynamodb::DynamoDbPolicy) (throttling retried,
/// failed conditions never).
pub fn dynamodb_retry() -> RetryLayer<crate::retry::dynamodb::DynamoDbPolicy> {
    RetryLayer::new(RetryConfig::database()).policy(crate::retry::dynamodb::DynamoDbPolicy)
}

#[cfg(test)]
mod tests {
    use super::*;
    use lift_core::testing::{TestApp, events};
    use lift_core::{App, Json};

    async fn keys(event: serde_json::Value) -> serde_json::Value {
        let app = TestApp::new(App::new().any("/{*path}", |ctx: Context| async move {
            Ok::<_, lift_core::Error>(Json(serde_json::json!({
                "ip": client_ip(&ctx),
                "api_key": api_key(&ctx),
                "user": user(&ctx),
                "operation": operation(&ctx),
            })))
        }))
        .expect("app");
        app.http(event)
            .await
            .expect("response")
            .json()
            .expect("json")
    }

    #[tokio::test]
    async fn keys_come_from_each_source() {
        let v2 = keys(events::http("GET", "/a").header("x-api-key", "k1").v2()).await;
        assert_eq!(v2["ip"], "192.0.2.1");
        assert_eq!(v2["api_key"], "k1");
        assert_eq!(v2["operation"], "GET /{*path}");
        let v1 = keys(events::http("POST", "/a").v1()).await;
        assert_eq!(v1["ip"], "192.0.2.1");
        // The ALB appends the address it saw; what comes before is the client's to write.
        let alb = keys(
            events::http("GET", "/a")
                .header("x-forwarded-for", "203.0.113.9, 198.51.100.4")
                .alb(),
        )
        .await;
        assert_eq!(alb["ip"], "198.51.100.4");
        let mut with_jwt = events::http("GET", "/a").v2();
        with_jwt["requestContext"]["authorizer"] =
            serde_json::json!({"jwt": {"claims": {"sub": "user-7"}, "scopes": []}});
        assert_eq!(keys(with_jwt).await["user"], "user-7");
    }

    #[tokio::test]
    async fn a_forged_forwarded_for_does_not_choose_the_key() {
        let ip = |trusted: usize, forwarded: &'static str| async move {
            let app = TestApp::new(App::new().any("/{*path}", move |ctx: Context| async move {
                Ok::<_, lift_core::Error>(Json(ClientIp::behind(trusted).of(&ctx)))
            }))
            .expect("app");
            let event = events::http("GET", "/a")
                .header("x-forwarded-for", forwarded)
                .alb();
            app.http(event)
                .await
                .expect("response")
                .json::<Option<String>>()
                .expect("json")
        };
        // Directly behind the ALB: the last entry, whatever the client wrote before it.
        assert_eq!(ip(0, "198.51.100.4").await.as_deref(), Some("198.51.100.4"));
        assert_eq!(
            ip(0, "1.1.1.1, 2.2.2.2, 198.51.100.4").await.as_deref(),
            Some("198.51.100.4")
        );
        // One proxy (a CDN) in front of the ALB: the entry the proxy appended.
        assert_eq!(
            ip(1, "1.1.1.1, 198.51.100.4, 10.0.0.7").await.as_deref(),
            Some("198.51.100.4")
        );
        // Fewer entries than hops: the farthest one known.
        assert_eq!(ip(2, "10.0.0.7").await.as_deref(), Some("10.0.0.7"));
    }

    /// A client that sends `X-Forwarded-For` lines of its own (before the line the ALB
    /// appends to), or a byte that is not visible ASCII in its part of the list, still does
    /// not choose the key: the lines are one list, read as bytes. (Only the first line was
    /// read, and a byte of the client's made the whole value no key at all.)
    #[tokio::test]
    async fn forwarded_for_lines_and_bytes_of_the_clients_do_not_choose_the_key() {
        let app = TestApp::new(App::new().any("/{*path}", |ctx: Context| async move {
            Ok::<_, lift_core::Error>(Json(ClientIp::behind(0).of(&ctx)))
        }))
        .expect("app");
        let ip = |lines: serde_json::Value| {
            let app = &app;
            async move {
                let mut event = events::http("GET", "/a").alb();
                event["multiValueHeaders"]["x-forwarded-for"] = lines;
                app.http(event)
                    .await
                    .expect("response")
                    .json::<Option<String>>()
                    .expect("json")
            }
        };
        let lines = serde_json::json!(["1.1.1.1", "2.2.2.2, 198.51.100.4"]);
        assert_eq!(ip(lines).await.as_deref(), Some("198.51.100.4"));
        let lines = serde_json::json!(["1.1.1.1\u{e9}, 198.51.100.4"]);
        assert_eq!(ip(lines).await.as_deref(), Some("198.51.100.4"));
        // An ALB that preserves the client's port: the address alone.
        let lines = serde_json::json!(["1.1.1.1, 198.51.100.4:40312"]);
        assert_eq!(ip(lines).await.as_deref(), Some("198.51.100.4"));
        let lines = serde_json::json!(["[2001:db8::7]:40312"]);
        assert_eq!(ip(lines).await.as_deref(), Some("2001:db8::7"));
        // What the trusted hop wrote is an address, or there is no key.
        let lines = serde_json::json!(["1.1.1.1, not-an-address"]);
        assert_eq!(ip(lines).await, None);
    }

    #[tokio::test]
    async fn a_per_ip_limit_holds_against_forged_headers() {
        use crate::rate_limit::RateLimitLayer;
        let limit = RateLimitLayer::per_second(std::num::NonZeroU32::MIN)
            .keyed(client_ip as ContextKey, 100);
        let app = TestApp::new(
            App::new()
                .get("/a", |_ctx: Context| async {
                    Ok::<_, lift_core::Error>("ok")
                })
                .layer(limit),
        )
        .expect("app");
        let from = |forged: &str| {
            events::http("GET", "/a")
                .header("x-forwarded-for", &format!("{forged}, 198.51.100.4"))
                .alb()
        };
        assert_eq!(app.http(from("1.1.1.1")).await.expect("first").status, 200);
        // Another forged first entry from the same client: the same key, refused.
        assert_eq!(app.http(from("2.2.2.2")).await.expect("second").status, 429);
    }

    #[test]
    fn presets_build() {
        assert!(basic_breaker("a").is_ok());
        assert!(per_tenant_breaker("a").is_ok());
        assert!(per_operation_breaker("a").is_ok());
        assert!(tenant_isolated_bulkhead("a", 10, 2).is_ok());
        assert!(operation_isolated_bulkhead("a", 10, 2).is_ok());
        assert!(priority_bulkhead("a", 10, 2).is_ok());
        assert!(priority_bulkhead("a", 2, 2).is_err());
        assert!(basic_bulkhead("a", 0).is_err());
    }
}
