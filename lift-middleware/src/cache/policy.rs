//! What to cache: a [`CachePolicy`] turns a request into a [`CacheRule`] (its key, time to
//! live and freshness demands) and decides whether an answer may be kept.

use std::fmt::Write as _;
use std::time::Duration;

use http::{HeaderName, Method, header};
use lift_core::{Context, Response};
use percent_encoding::{AsciiSet, CONTROLS, PercentEncode, percent_encode};

/// How one request uses the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CacheRule {
    /// The key within the tenant (the tenant is always added by the cache).
    pub key: String,
    /// How long an answer is kept, at most.
    pub ttl: Duration,
    /// Skip the lookup and compute a fresh answer, which then replaces the stored one
    /// (a request's `Cache-Control: no-cache`).
    pub refresh: bool,
    /// Accept only an answer stored at most this long ago (a request's `max-age`).
    pub max_age: Option<Duration>,
    /// Keep the answer only when the response allows shared caching (`public` or
    /// `s-maxage`), as for a request that carried credentials.
    pub shared_only: bool,
}

impl CacheRule {
    /// Caches under `key` for `ttl`.
    pub fn new(key: impl Into<String>, ttl: Duration) -> CacheRule {
        CacheRule {
            key: key.into(),
            ttl,
            refresh: false,
            max_age: None,
            shared_only: false,
        }
    }

    /// Computes afresh instead of looking up (the answer is still stored).
    pub fn refresh(mut self, on: bool) -> CacheRule {
        self.refresh = on;
        self
    }

    /// Accepts only answers stored at most `max_age` ago.
    pub fn max_age(mut self, max_age: Duration) -> CacheRule {
        self.max_age = Some(max_age);
        self
    }
}

/// Decides, per request, whether and how to cache.
///
/// Any `Fn(&Context) -> Option<CacheRule>` is a policy that keeps 2xx answers as
/// [`CachePolicy::keep`] describes.
pub trait CachePolicy: Send + Sync + 'static {
    /// The rule for this request, or `None` to pass it through untouched.
    fn rule(&self, ctx: &Context) -> Option<CacheRule>;

    /// How long to keep `response`, or `None` not to keep it.
    ///
    /// The default keeps complete answers (200, 203 or 204: never a 206, a part of one)
    /// without `Set-Cookie` whose `Cache-Control` does not say `no-store`, `no-cache` or
    /// `private`, for the rule's time to live shortened to
    /// the response's `s-maxage` or `max-age`; under [`CacheRule::shared_only`] the
    /// response must say `public` or `s-maxage`.
    fn keep(&self, rule: &CacheRule, response: &Response) -> Option<Duration> {
        keep_http(rule, response)
    }
}

impl<F> CachePolicy for F
where
    F: Fn(&Context) -> Option<CacheRule> + Send + Sync + 'static,
{
    fn rule(&self, ctx: &Context) -> Option<CacheRule> {
        self(ctx)
    }
}

/// The directives of a `Cache-Control` header that caching depends on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CacheControl {
    /// `no-store`.
    pub no_store: bool,
    /// `no-cache`.
    pub no_cache: bool,
    /// `private`.
    pub private: bool,
    /// `public`.
    pub public: bool,
    /// `max-age`, in seconds.
    pub max_age: Option<u64>,
    /// `s-maxage`, in seconds.
    pub s_maxage: Option<u64>,
}

impl CacheControl {
    /// Parses every `Cache-Control` value of `headers`; unknown directives are ignored
    /// and a malformed number makes the entry uncacheable (`no-store`), as the safe
    /// reading.
    pub fn parse(headers: &http::HeaderMap) -> CacheControl {
        let mut cc = CacheControl::default();
        for value in headers.get_all(header::CACHE_CONTROL) {
            let Ok(value) = value.to_str() else {
                cc.no_store = true;
                continue;
            };
            for directive in value.split(',') {
                let (name, arg) = match directive.split_once('=') {
                    Some((name, arg)) => (name.trim(), Some(arg.trim().trim_matches('"'))),
                    None => (directive.trim(), None),
                };
                let seconds = || arg.and_then(|a| a.parse::<u64>().ok());
                match name.to_ascii_lowercase().as_str() {
                    "no-store" => cc.no_store = true,
                    "no-cache" => cc.no_cache = true,
                    "private" => cc.private = true,
                    "public" => cc.public = true,
                    "max-age" => match seconds() {
                        Some(s) => cc.max_age = Some(s),
                        None => cc.no_store = true,
                    },
                    "s-maxage" => match seconds() {
                        Some(s) => cc.s_maxage = Some(s),
                        None => cc.no_store = true,
                    },
                    _ => {}
                }
            }
        }
        cc
    }
}

fn keep_http(rule: &CacheRule, response: &Response) -> Option<Duration> {
    // A 206 is a part of an answer (a Range request's): stored, it would be served whole.
    if !matches!(response.status().as_u16(), 200 | 203 | 204)
        || response.headers().contains_key(header::SET_COOKIE)
    {
        return None;
    }
    let cc = CacheControl::parse(response.headers());
    if cc.no_store || cc.no_cache || cc.private {
        return None;
    }
    if rule.shared_only && !cc.public && cc.s_maxage.is_none() {
        return None;
    }
    let ttl = match cc.s_maxage.or(cc.max_age) {
        Some(seconds) => rule.ttl.min(Duration::from_secs(seconds)),
        None => rule.ttl,
    };
    (!ttl.is_zero()).then_some(ttl)
}

/// The usual HTTP policy: `GET` and `HEAD` requests are cached under their method, path,
/// sorted query and the values of the [`vary`](HttpGetPolicy::vary) headers, honouring
/// the request's `Cache-Control` (`no-store` passes through, `no-cache` and `max-age=0`
/// refresh, `max-age` bounds the age). A request that carries credentials (an
/// `Authorization` or `Cookie` header, a service token, or a caller that authentication
/// resolved, a Lambda authorizer's included) is kept only when the response allows shared
/// caching (`public` or `s-maxage`). Other events pass through.
#[derive(Debug, Clone)]
pub struct HttpGetPolicy {
    ttl: Duration,
    vary: Vec<HeaderName>,
}

impl HttpGetPolicy {
    /// Keeps answers for at most `ttl`.
    pub fn new(ttl: Duration) -> HttpGetPolicy {
        HttpGetPolicy {
            ttl,
            vary: Vec::new(),
        }
    }

    /// Adds a request header whose value is part of the key (such as `accept-language`).
    pub fn vary(mut self, header: HeaderName) -> HttpGetPolicy {
        self.vary.push(header);
        self
    }
}

/// What a part of a cache key escapes: controls, non-ASCII, and the characters that
/// separate its parts.
const KEY_PART: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'%')
    .add(b'?')
    .add(b'&')
    .add(b'=')
    .add(b',')
    .add(b'#');

fn escaped(bytes: &[u8]) -> PercentEncode<'_> {
    percent_encode(bytes, KEY_PART)
}

/// The header of a service-to-service token (`service_auth`).
const SERVICE_TOKEN: HeaderName = HeaderName::from_static("x-lift-service-token");

impl CachePolicy for HttpGetPolicy {
    /// As [`CachePolicy::keep`], and not an answer that says it varies (`Vary`) on a
    /// header the key does not hold (a CORS layer's `Vary: Origin` with one origin's
    /// `Access-Control-Allow-Origin`, a language negotiated from `Accept-Language`), nor
    /// one that varies on everything (`Vary: *`): served to the next caller, it would be
    /// another request's answer. Name such a header with [`HttpGetPolicy::vary`].
    fn keep(&self, rule: &CacheRule, response: &Response) -> Option<Duration> {
        let unkeyed = response
            .headers()
            .get_all(header::VARY)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|name| !name.is_empty())
            .any(|name| {
                name == "*"
                    || !self
                        .vary
                        .iter()
                        .any(|v| v.as_str().eq_ignore_ascii_case(name))
            });
        if unkeyed {
            return None;
        }
        keep_http(rule, response)
    }

    fn rule(&self, ctx: &Context) -> Option<CacheRule> {
        let http = ctx.http()?;
        let method = http.method();
        if method != Method::GET && method != Method::HEAD {
            return None;
        }
        let cc = CacheControl::parse(http.headers());
        if cc.no_store {
            return None;
        }
        // Room for the cache to put the namespace and tenant in front without reallocating.
        // The path, query and header values come decoded: each is escaped again, so that
        // no value can spell the key of another request (`?a=x%26b%3Dy` is not `?a=x&b=y`).
        let mut key = String::with_capacity(128);
        key.push_str(method.as_str());
        key.push(' ');
        let _ = write!(key, "{}", escaped(http.path().as_bytes()));
        let mut query: Vec<&(String, String)> = http.query_pairs().iter().collect();
        if !query.is_empty() {
            query.sort();
            for (i, (name, value)) in query.into_iter().enumerate() {
                key.push(if i == 0 { '?' } else { '&' });
                let _ = write!(
                    key,
                    "{}={}",
                    escaped(name.as_bytes()),
                    escaped(value.as_bytes())
                );
            }
        }
        for name in &self.vary {
            key.push('\u{1f}');
            key.push_str(name.as_str());
            key.push('=');
            for (i, value) in http.headers().get_all(name).iter().enumerate() {
                if i > 0 {
                    key.push(',');
                }
                let _ = write!(key, "{}", escaped(value.as_bytes()));
            }
        }
        let mut rule = CacheRule::new(key, self.ttl);
        rule.refresh = cc.no_cache || cc.max_age == Some(0);
        rule.max_age = cc.max_age.map(Duration::from_secs);
        // Credentials of any kind: the answer may be the caller's own, and the cache is
        // shared by the tenant's callers.
        rule.shared_only = ctx.principal().is_some()
            || gateway_authenticated(http)
            || [header::AUTHORIZATION, header::COOKIE]
                .iter()
                .chain(std::iter::once(&SERVICE_TOKEN))
                .any(|name| http.headers().contains_key(name));
        Some(rule)
    }
}

/// Whether API Gateway authenticated the caller before the function saw the request: a
/// Lambda, JWT or IAM authorizer's context, or a REST API's IAM or Cognito identity. The
/// credentials need not be in a header this layer knows (an API key header, a custom
/// one), and the handler's answer may be the caller's own.
fn gateway_authenticated(http: &lift_core::HttpRequest) -> bool {
    use lambda_http::request::RequestContext;
    let authorizer = |a: &lambda_http::aws_lambda_events::apigw::ApiGatewayRequestAuthorizer| {
        a.jwt.is_some() || a.iam.is_some() || !a.fields.is_empty()
    };
    match http.request_context() {
        RequestContext::ApiGatewayV2(c) => c.authorizer.as_ref().is_some_and(authorizer),
        RequestContext::ApiGatewayV1(c) => {
            let known = |v: &Option<String>| v.as_deref().is_some_and(|v| !v.is_empty());
            authorizer(&c.authorizer)
                || known(&c.identity.user_arn)
                || known(&c.identity.cognito_identity_id)
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderMap, HeaderValue, StatusCode};

    fn headers(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::CACHE_CONTROL, HeaderValue::from_str(value).unwrap());
        h
    }

    #[test]
    fn parses_directives() {
        let cc = CacheControl::parse(&headers("public, max-age=60, S-MAXAGE=\"30\", foo=bar"));
        assert!(cc.public && !cc.private && !cc.no_store);
        assert_eq!((cc.max_age, cc.s_maxage), (Some(60), Some(30)));
        assert!(CacheControl::parse(&headers("max-age=soon")).no_store);
        assert_eq!(
            CacheControl::parse(&HeaderMap::new()),
            CacheControl::default()
        );
    }

    fn response(status: u16, cc: Option<&str>) -> Response {
        let mut r = Response::new(lift_core::Body::Empty);
        *r.status_mut() = StatusCode::from_u16(status).unwrap();
        if let Some(cc) = cc {
            *r.headers_mut() = headers(cc);
        }
        r
    }

    #[test]
    fn keeps_by_status_and_directives() {
        let rule = CacheRule::new("k", Duration::from_secs(100));
        assert_eq!(
            keep_http(&rule, &response(200, None)),
            Some(Duration::from_secs(100))
        );
        assert_eq!(
            keep_http(&rule, &response(200, Some("max-age=10"))),
            Some(Duration::from_secs(10))
        );
        assert_eq!(
            keep_http(&rule, &response(200, Some("max-age=10, s-maxage=20"))),
            Some(Duration::from_secs(20))
        );
        assert_eq!(keep_http(&rule, &response(200, Some("max-age=0"))), None);
        assert_eq!(keep_http(&rule, &response(500, None)), None);
        assert_eq!(keep_http(&rule, &response(404, None)), None);
        assert_eq!(
            keep_http(&rule, &response(206, None)),
            None,
            "a part of an answer"
        );
        assert!(keep_http(&rule, &response(204, None)).is_some());
        for cc in ["no-store", "no-cache", "private"] {
            assert_eq!(keep_http(&rule, &response(200, Some(cc))), None, "{cc}");
        }
        let mut cookie = response(200, None);
        cookie
            .headers_mut()
            .insert(header::SET_COOKIE, HeaderValue::from_static("a=b"));
        assert_eq!(keep_http(&rule, &cookie), None);
    }

    /// An answer that varies on a header the key does not hold is not kept; once the
    /// policy keys on it, it is.
    #[test]
    fn an_answer_varying_on_an_unkeyed_header_is_not_kept() {
        let rule = CacheRule::new("k", Duration::from_secs(100));
        let varying = |vary: &str| {
            let mut r = response(200, None);
            r.headers_mut()
                .insert(header::VARY, HeaderValue::from_str(vary).unwrap());
            r
        };
        let plain = HttpGetPolicy::new(Duration::from_secs(100));
        assert_eq!(plain.keep(&rule, &varying("Origin")), None);
        assert_eq!(plain.keep(&rule, &varying("*")), None);
        assert!(plain.keep(&rule, &response(200, None)).is_some());
        let by_origin = HttpGetPolicy::new(Duration::from_secs(100)).vary(header::ORIGIN);
        assert!(by_origin.keep(&rule, &varying("origin")).is_some());
        assert_eq!(
            by_origin.keep(&rule, &varying("Origin, Accept-Language")),
            None
        );
    }

    #[test]
    fn shared_only_needs_public() {
        let mut rule = CacheRule::new("k", Duration::from_secs(100));
        rule.shared_only = true;
        assert_eq!(keep_http(&rule, &response(200, None)), None);
        assert!(keep_http(&rule, &response(200, Some("public"))).is_some());
        assert!(keep_http(&rule, &response(200, Some("s-maxage=5"))).is_some());
    }
}
