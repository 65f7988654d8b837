//! `quotes`: `GET /quotes/{symbol}` answers with a price it fetches from an upstream price
//! service over HTTP (`GET {upstream}/prices/{symbol}` → `{"price": 12.5}`). The outbound
//! call goes through Lift's resilience stack, outermost first: a bulkhead (16 calls at
//! once), a circuit breaker (opens after 3 failures in a row), a deadline-aware timeout and
//! retries of 429/5xx and transport errors. What the stack refuses becomes the matching
//! HTTP answer: 503 with `Retry-After` while the breaker is open, 504 on a timeout.

use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::StatusCode;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use lift_core::{App, BoxError, BoxFuture, Context, Error, Json};
use lift_middleware::ConfigError;
use lift_middleware::bulkhead::{BulkheadConfig, BulkheadLayer};
use lift_middleware::circuit_breaker::{CircuitBreakerConfig, CircuitBreakerLayer};
use lift_middleware::classify::RequestInfo;
use lift_middleware::retry::{Backoff, Jitter, RetryConfig, RetryLayer};
use lift_middleware::timeout::TimeoutLayer;
use serde::{Deserialize, Serialize};
use tower::util::BoxCloneSyncService;
use tower::{Service, ServiceBuilder, ServiceExt};

/// One call to the price service.
#[derive(Debug, Clone)]
pub struct PriceRequest {
    /// The symbol to price.
    pub symbol: String,
    /// The invocation's deadline, so the stack never starts what cannot finish.
    pub deadline: Option<SystemTime>,
    /// Trace, correlation and tenant headers to send along ([`Context::outbound_headers`]).
    pub headers: http::HeaderMap,
}

impl RequestInfo for PriceRequest {
    fn deadline(&self) -> Option<SystemTime> {
        self.deadline
    }
    /// A price is read: asking twice is asking once.
    fn is_idempotent(&self) -> bool {
        true
    }
}

/// The price service's HTTP client, as a tower service (built once, cloned per call).
#[derive(Clone, Debug)]
pub struct PriceClient {
    client: Client<HttpConnector, Empty<Bytes>>,
    base: Arc<str>,
}

impl PriceClient {
    /// A client for the price service at `base` (`http://host:port`).
    pub fn new(base: &str) -> Self {
        PriceClient {
            client: Client::builder(TokioExecutor::new()).build_http(),
            base: Arc::from(base.trim_end_matches('/')),
        }
    }
}

impl Service<PriceRequest> for PriceClient {
    type Response = http::Response<Bytes>;
    type Error = BoxError;
    type Future = BoxFuture<Result<Self::Response, BoxError>>;

    fn poll_ready(&mut self, _cx: &mut TaskContext<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: PriceRequest) -> Self::Future {
        let client = self.client.clone();
        let base = self.base.clone();
        Box::pin(async move {
            // The handler took only a well-formed symbol: it goes as it is, never rewritten
            // into another instrument's.
            let uri: http::Uri = format!("{base}/prices/{}", request.symbol).parse()?;
            let mut outbound = http::Request::get(uri).body(Empty::new())?;
            outbound.headers_mut().extend(request.headers);
            let response = client.request(outbound).await?;
            let (parts, body) = response.into_parts();
            let body = body.collect().await?.to_bytes();
            Ok(http::Response::from_parts(parts, body))
        })
    }
}

/// The protected outbound service.
pub type Prices = BoxCloneSyncService<PriceRequest, http::Response<Bytes>, BoxError>;

/// Settings of the protection (see [`Protection::default`]).
#[derive(Debug, Clone)]
pub struct Protection {
    /// Calls at once.
    pub max_concurrent: u32,
    /// Failures in a row that open the breaker.
    pub failures_to_open: u32,
    /// How long the breaker stays open.
    pub open_for: Duration,
    /// Per-call timeout (shortened by the invocation's deadline).
    pub timeout: Duration,
    /// Attempts per call.
    pub attempts: u32,
    /// First retry delay.
    pub backoff: Duration,
}

impl Default for Protection {
    /// 16 at once, open after 3 failures for 30 s, 2 s timeout, 3 attempts from 50 ms.
    fn default() -> Self {
        Protection {
            max_concurrent: 16,
            failures_to_open: 3,
            open_for: Duration::from_secs(30),
            timeout: Duration::from_secs(2),
            attempts: 3,
            backoff: Duration::from_millis(50),
        }
    }
}

/// Wraps `client` in the resilience stack.
///
/// # Errors
/// [`ConfigError`] for invalid settings.
pub fn protect(client: PriceClient, protection: &Protection) -> Result<Prices, ConfigError> {
    let bulkhead = BulkheadConfig::builder("prices")
        .max_concurrent(protection.max_concurrent)
        .build()?;
    let breaker = CircuitBreakerConfig::builder("prices")
        .consecutive_failures(protection.failures_to_open)
        .no_failure_rate()
        .open_for(protection.open_for)
        .build()?;
    let retry = RetryConfig::builder()
        .max_attempts(protection.attempts)
        .backoff(Backoff::Exponential {
            initial: protection.backoff,
            factor: 2.0,
        })
        .jitter(Jitter::Full)
        .build()?;
    let stack = ServiceBuilder::new()
        .layer(BulkheadLayer::new(bulkhead))
        .layer(CircuitBreakerLayer::new(breaker))
        .layer(TimeoutLayer::deadline_aware(
            protection.timeout,
            Duration::from_millis(100),
        )?)
        .layer(RetryLayer::new(retry))
        .service(client);
    Ok(BoxCloneSyncService::new(stack))
}

/// A quote.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct Quote {
    /// The symbol.
    pub symbol: String,
    /// Its price.
    pub price: f64,
}

#[derive(Deserialize)]
struct Price {
    price: f64,
}

async fn quote(prices: Prices, ctx: Context) -> Result<Json<Quote>, BoxError> {
    let symbol = ctx.path_param("symbol")?.to_ascii_uppercase();
    // 1 to 12 letters and digits: anything else is refused, not rewritten (`BRK.B` is not
    // `BRKB`) nor sent upstream.
    if symbol.is_empty() || symbol.len() > 12 || !symbol.bytes().all(|b| b.is_ascii_alphanumeric())
    {
        return Err(Box::new(Error::Validation(vec![lift_core::FieldError {
            pointer: "/symbol".to_owned(),
            message: "1 to 12 letters and digits".to_owned(),
        }])));
    }
    let response = prices
        .oneshot(PriceRequest {
            symbol: symbol.clone(),
            deadline: ctx.deadline(),
            headers: ctx.outbound_headers(),
        })
        .await
        .map_err(|error| -> BoxError {
            // The stack's own refusals (an open circuit, a full bulkhead, a timeout) keep
            // their status; a connection that failed is the upstream's, not this function's.
            if error.is::<Error>() {
                error
            } else {
                tracing::warn!(%error, "the price service could not be reached");
                Box::new(Error::new(
                    StatusCode::BAD_GATEWAY,
                    "upstream_unreachable",
                    "the price service could not be reached",
                ))
            }
        })?;
    match response.status() {
        StatusCode::OK => {
            let price: Price = serde_json::from_slice(response.body()).map_err(|_| {
                Error::new(
                    StatusCode::BAD_GATEWAY,
                    "upstream_invalid",
                    "the price service answered nonsense",
                )
            })?;
            Ok(Json(Quote {
                symbol,
                price: price.price,
            }))
        }
        StatusCode::NOT_FOUND => Err(Box::new(Error::not_found(format!("no price for {symbol}")))),
        status => Err(Box::new(Error::new(
            StatusCode::BAD_GATEWAY,
            "upstream_failed",
            format!("the price service answered {status}"),
        ))),
    }
}

/// The quotes App over a protected price service.
pub fn app(prices: Prices) -> App {
    App::new().get("/quotes/{symbol}", move |ctx: Context| {
        quote(prices.clone(), ctx)
    })
}
