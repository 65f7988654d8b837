//! HTTP to a Function URL (or any HTTP endpoint); calls to Function URLs signed with SigV4
//! when the transport has credentials.

use std::time::SystemTime;

use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use bytes::Bytes;
use futures_util::future::BoxFuture;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use lift_core::BoxError;

use crate::transport::{Outbound, ServiceResponse, Transport, TransportError};

type HttpsClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// Calls an instance over HTTP: its Function URL, else its HTTP URL, with the request's
/// path appended. With [`HttpTransport::signed`], calls to Function URLs are signed with
/// SigV4 for the `lambda` service in the URL's region (`AWS_IAM` auth); calls to an
/// instance's HTTP URL never are, nor calls to a `function_url` whose host is not
/// `<id>.lambda-url.<region>.on.aws`, so the caller's AWS credentials (a session token
/// among them) never go to an endpoint that is not a Lambda Function URL.
#[derive(Clone)]
pub struct HttpTransport {
    client: HttpsClient,
    credentials: Option<SharedCredentialsProvider>,
    local: Option<std::sync::Arc<str>>,
    max_response: usize,
}

/// The largest answer [`HttpTransport`] reads by default: 16 MiB, room for any buffered
/// Lambda response (6 MB) and a streamed one of moderate size.
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;

impl std::fmt::Debug for HttpTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpTransport")
            .field("signed", &self.credentials.is_some())
            .finish_non_exhaustive()
    }
}

impl HttpTransport {
    /// An unsigned transport trusting the system's root certificates (plain HTTP too, for
    /// local endpoints).
    ///
    /// # Errors
    /// When the system's roots cannot be loaded.
    pub fn new() -> Result<Self, BoxError> {
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_native_roots()?
            .https_or_http()
            .enable_http1()
            .build();
        Ok(HttpTransport {
            client: Client::builder(hyper_util::rt::TokioExecutor::new()).build(connector),
            credentials: None,
            local: None,
            max_response: DEFAULT_MAX_RESPONSE_BYTES,
        })
    }

    /// Reads answers of at most `bytes` ([`DEFAULT_MAX_RESPONSE_BYTES`] unless set); a larger
    /// one is [`TransportError::BadResponse`], read no further. An HTTP URL may be anyone's:
    /// an endpoint that streams without end must not take the caller's memory (a Lambda
    /// function has no swap).
    pub fn max_response_bytes(mut self, bytes: usize) -> Self {
        self.max_response = bytes;
        self
    }

    /// Signs calls to Function URLs with SigV4 using `credentials` (for example
    /// `lift_core::aws::sdk_config().await.credentials_provider()`); calls to HTTP URLs
    /// go unsigned.
    pub fn signed(mut self, credentials: SharedCredentialsProvider) -> Self {
        self.credentials = Some(credentials);
        self
    }

    /// Sends calls for AWS Function URLs (`https://<id>.lambda-url.<region>.on.aws/`) to a
    /// local emulator at `endpoint` that serves them by path
    /// (`<endpoint>/_aws/lambda-url/<id>/`), so that registered URLs work unchanged on the
    /// emulator. Other URLs are untouched. For local deployments only: pass the emulator's
    /// `AWS_ENDPOINT_URL`.
    pub fn local_function_urls(mut self, endpoint: impl AsRef<str>) -> Self {
        self.local = Some(endpoint.as_ref().trim_end_matches('/').into());
        self
    }
}

/// An AWS Function URL's parts: `https://<id>.lambda-url.<region>.on.aws/<path>` gives
/// the id, the region and the path; any other URL gives `None`.
fn function_url_parts(base: &str) -> Option<(&str, &str, &str)> {
    let rest = base.strip_prefix("https://")?;
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    let (id, domain) = host.split_once(".lambda-url.")?;
    let region = domain.strip_suffix(".on.aws")?;
    let plain = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    };
    (plain(id) && plain(region)).then_some((id, region, path))
}

/// `base` as the emulator at `local` serves it, when it is an AWS Function URL.
fn localized<'a>(base: &'a str, local: Option<&str>) -> std::borrow::Cow<'a, str> {
    match (local, function_url_parts(base)) {
        (Some(local), Some((id, _, path))) => format!("{local}/_aws/lambda-url/{id}/{path}").into(),
        _ => base.into(),
    }
}

/// The URL a call goes to: the endpoint's base with the request's path.
fn url(base: &str, path: &str) -> String {
    format!(
        "{}/{}",
        base.trim_end_matches('/'),
        path.trim_start_matches('/')
    )
}

/// Adds the SigV4 headers for `service` in `region` to `request`.
pub(crate) fn sign_request(
    request: &mut http::Request<Full<Bytes>>,
    body: &[u8],
    credentials: aws_credential_types::Credentials,
    region: &str,
    now: SystemTime,
) -> Result<(), BoxError> {
    let identity = credentials.into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name("lambda")
        .time(now)
        .settings(SigningSettings::default())
        .build()?
        .into();
    let headers = request
        .headers()
        .iter()
        .filter_map(|(k, v)| v.to_str().ok().map(|v| (k.as_str(), v)));
    let uri = request.uri().to_string();
    let signable = SignableRequest::new(
        request.method().as_str(),
        &uri,
        headers,
        SignableBody::Bytes(body),
    )?;
    let (instructions, _signature) = sign(signable, &params)?.into_parts();
    instructions.apply_to_request_http1x(request);
    Ok(())
}

impl Transport for HttpTransport {
    fn send(&self, call: Outbound) -> BoxFuture<'static, Result<ServiceResponse, BoxError>> {
        let this = self.clone();
        Box::pin(async move {
            let endpoints = &call.instance.endpoints;
            // Only a Function URL is AWS's to authenticate: an HTTP URL may be anyone's, and
            // so may a `function_url` whose host is not one of Lambda's.
            let Some((base, signing_region)) = endpoints
                .function_url
                .as_deref()
                .map(|url| (url, function_url_parts(url).map(|(_, region, _)| region)))
                .or(endpoints.http_url.as_deref().map(|url| (url, None)))
            else {
                return Err(TransportError::NoEndpoint {
                    instance: call.instance.id.to_string(),
                }
                .into());
            };
            // A registered URL that is no URI is the instance's fault, as a missing one is:
            // not the request's, which another instance may take.
            let base = localized(base, this.local.as_deref());
            if base.parse::<http::Uri>().is_err() {
                return Err(TransportError::NoEndpoint {
                    instance: call.instance.id.to_string(),
                }
                .into());
            }
            let request = &call.request;
            let mut builder = http::Request::builder()
                .method(request.method.clone())
                .uri(url(&base, &request.path));
            for (name, value) in &request.headers {
                builder = builder.header(name, value);
            }
            if let Some(caller) = &call.caller {
                builder = builder.header("x-lift-caller", caller.as_ref().clone());
            }
            let instance = &call.instance.id;
            let not_sent = |error: BoxError| TransportError::not_sent(instance, error);
            let mut outgoing = builder
                .body(Full::new(request.body.clone()))
                .map_err(|e| not_sent(e.into()))?;
            if let (Some(provider), Some(region)) = (this.credentials.as_ref(), signing_region) {
                let credentials = provider
                    .provide_credentials()
                    .await
                    .map_err(|e| not_sent(e.into()))?;
                sign_request(
                    &mut outgoing,
                    &request.body,
                    credentials,
                    region,
                    SystemTime::now(),
                )
                .map_err(not_sent)?;
            }
            let response = match this.client.request(outgoing).await {
                Ok(response) => response,
                // No connection (a name that does not resolve, a refused connection):
                // nothing reached the instance, so any request may go to another.
                Err(error) if error.is_connect() => {
                    // hyper's own message is only "client error (Connect)": the cause
                    // (a name that does not resolve, a refused connection, TLS) is below.
                    let mut reason = String::from("no connection");
                    let mut source = std::error::Error::source(&error);
                    while let Some(cause) = source {
                        reason.push_str(": ");
                        reason.push_str(&cause.to_string());
                        source = cause.source();
                    }
                    return Err(TransportError::NotInvoked {
                        instance: instance.to_string(),
                        reason,
                    }
                    .into());
                }
                Err(error) => return Err(error.into()),
            };
            let status = response.status().as_u16();
            let headers = response.headers().clone();
            let limit = this.max_response;
            let body = http_body_util::Limited::new(response.into_body(), limit)
                .collect()
                .await
                .map_err(|error| -> BoxError {
                    if error.is::<http_body_util::LengthLimitError>() {
                        Box::new(TransportError::BadResponse(format!(
                            "the answer is larger than {limit} bytes"
                        )))
                    } else {
                        error
                    }
                })?
                .to_bytes();
            Ok(ServiceResponse {
                status,
                headers,
                body,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_join_base_and_path() {
        assert_eq!(
            url("https://x.on.aws/", "/charges?a=1"),
            "https://x.on.aws/charges?a=1"
        );
        assert_eq!(
            url("http://h/_aws/lambda-url/id", "whoami"),
            "http://h/_aws/lambda-url/id/whoami"
        );
    }

    #[test]
    fn function_urls_go_to_the_emulator_only_when_asked() {
        let aws = "https://abc123.lambda-url.us-east-1.on.aws/";
        assert_eq!(localized(aws, None), aws);
        assert_eq!(
            localized(aws, Some("http://127.0.0.1:4566")),
            "http://127.0.0.1:4566/_aws/lambda-url/abc123/"
        );
        assert_eq!(
            url(
                &localized(aws, Some("http://127.0.0.1:4566")),
                "/whoami?x=1"
            ),
            "http://127.0.0.1:4566/_aws/lambda-url/abc123/whoami?x=1"
        );
        for other in [
            "https://api.example.com/v1",
            "http://abc.lambda-url.us-east-1.on.aws/",
            "https://.lambda-url.us-east-1.on.aws/",
        ] {
            assert_eq!(localized(other, Some("http://127.0.0.1:4566")), other);
        }
    }

    /// A local endpoint answering 200 to each request; the head of each request it got.
    async fn endpoint() -> (String, tokio::sync::mpsc::UnboundedReceiver<String>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = listener.local_addr().expect("address");
        let (heads, received) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let mut head = Vec::new();
                let mut buffer = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut buffer).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => head.extend_from_slice(&buffer[..n]),
                    }
                }
                let _ = heads.send(String::from_utf8_lossy(&head).to_lowercase());
                let _ = socket
                    .write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                    )
                    .await;
            }
        });
        (format!("http://{address}"), received)
    }

    /// A registered URL that is no URI is the instance's fault (no usable endpoint: the
    /// call may go to another instance, and the instance counts it); a request path that
    /// makes no URI is the request's (not sent, final).
    #[tokio::test]
    async fn a_bad_registered_url_is_no_endpoint_and_a_bad_path_is_not_sent() {
        let transport = HttpTransport::new().expect("transport");
        let error = transport
            .send(call_to(crate::Endpoints::http("http://bad host")))
            .await
            .expect_err("no URI");
        assert!(
            matches!(
                error.downcast_ref::<TransportError>(),
                Some(TransportError::NoEndpoint { .. })
            ),
            "{error:?}"
        );
        let mut call = call_to(crate::Endpoints::http("http://127.0.0.1:9"));
        call.request = std::sync::Arc::new(crate::transport::ServiceRequest::get("/a b"));
        let error = transport.send(call).await.expect_err("no URI");
        assert!(TransportError::is_not_sent(&error), "{error:?}");
    }

    /// An endpoint that answers 200 with `size` bytes of body.
    async fn endpoint_answering(size: usize) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = listener.local_addr().expect("address");
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let mut buffer = [0u8; 4096];
                let _ = socket.read(&mut buffer).await;
                let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {size}\r\n\r\n");
                let _ = socket.write_all(head.as_bytes()).await;
                let _ = socket.write_all(&vec![b'x'; size]).await;
            }
        });
        format!("http://{address}")
    }

    /// An answer larger than the transport reads is a bad response, not the caller's memory;
    /// one within the limit is read whole.
    #[tokio::test]
    async fn an_answer_over_the_limit_is_a_bad_response() {
        let transport = HttpTransport::new()
            .expect("transport")
            .max_response_bytes(1024);
        let base = endpoint_answering(1024).await;
        let answer = transport
            .send(call_to(crate::Endpoints::http(&base)))
            .await
            .expect("within the limit");
        assert_eq!(answer.body.len(), 1024);
        let base = endpoint_answering(1025).await;
        let error = transport
            .send(call_to(crate::Endpoints::http(&base)))
            .await
            .expect_err("over the limit");
        assert!(
            matches!(
                error.downcast_ref::<TransportError>(),
                Some(TransportError::BadResponse(_))
            ),
            "{error:?}"
        );
    }

    /// A connection refused reached no instance: not invoked, so any request may go to
    /// another instance.
    #[tokio::test]
    async fn a_refused_connection_is_not_invoked() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let address = listener.local_addr().expect("address");
        drop(listener);
        let error = HttpTransport::new()
            .expect("transport")
            .send(call_to(crate::Endpoints::http(format!("http://{address}"))))
            .await
            .expect_err("refused");
        assert!(
            matches!(
                error.downcast_ref::<TransportError>(),
                Some(TransportError::NotInvoked { .. })
            ),
            "{error:?}"
        );
    }

    fn call_to(endpoints: crate::Endpoints) -> Outbound {
        Outbound {
            instance: std::sync::Arc::new(crate::Instance::new(
                "partner",
                "partner@eu-west-1",
                "eu-west-1",
                endpoints,
            )),
            request: std::sync::Arc::new(crate::transport::ServiceRequest::get("/quotes")),
            caller: None,
        }
    }

    /// A signed transport signs calls to Function URLs only: an instance reached at its HTTP
    /// URL (anyone's endpoint) gets neither the caller's session token nor a signature.
    #[tokio::test]
    async fn only_function_urls_get_the_callers_credentials() {
        let (local, mut heads) = endpoint().await;
        let credentials = aws_credential_types::Credentials::new(
            "AKIDEXAMPLE",
            "secret",
            Some("session-token".to_owned()),
            None,
            "test",
        );
        let transport = HttpTransport::new()
            .expect("transport")
            .signed(SharedCredentialsProvider::new(credentials))
            .local_function_urls(&local);
        let http_url = crate::Endpoints {
            http_url: Some(format!("{local}/partner")),
            ..crate::Endpoints::default()
        };
        let answer = transport.send(call_to(http_url)).await.expect("answer");
        assert_eq!(answer.status, 200);
        let head = heads.recv().await.expect("a request");
        assert!(head.starts_with("get /partner/quotes "), "{head}");
        assert!(!head.contains("session-token"), "{head}");
        assert!(!head.contains("aws4-hmac-sha256"), "{head}");

        let function_url = crate::Endpoints {
            function_url: Some("https://abc123.lambda-url.eu-west-1.on.aws/".to_owned()),
            ..crate::Endpoints::default()
        };
        transport.send(call_to(function_url)).await.expect("answer");
        let head = heads.recv().await.expect("a request");
        assert!(
            head.starts_with("get /_aws/lambda-url/abc123/quotes "),
            "{head}"
        );
        assert!(
            head.contains("x-amz-security-token: session-token"),
            "{head}"
        );
        assert!(head.contains("authorization: aws4-hmac-sha256"), "{head}");

        // Registered as a Function URL, but not one of Lambda's hosts: anyone's endpoint.
        let not_lambda = crate::Endpoints {
            function_url: Some(format!("{local}/partner")),
            ..crate::Endpoints::default()
        };
        transport.send(call_to(not_lambda)).await.expect("answer");
        let head = heads.recv().await.expect("a request");
        assert!(head.starts_with("get /partner/quotes "), "{head}");
        assert!(!head.contains("session-token"), "{head}");
        assert!(!head.contains("aws4-hmac-sha256"), "{head}");
        for lookalike in [
            "https://abc123.lambda-url.eu-west-1.on.aws.partner.example/",
            "https://abc123.lambda-url.eu-west-1.on.aws@partner.example/",
            "https://partner.example/abc123.lambda-url.eu-west-1.on.aws/",
        ] {
            assert_eq!(function_url_parts(lookalike), None, "{lookalike}");
        }
    }

    #[test]
    fn a_signed_request_carries_a_sigv4_authorization_for_lambda() {
        let mut request = http::Request::builder()
            .method("POST")
            .uri("https://abc.lambda-url.eu-west-1.on.aws/charges")
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from_static(b"{}")))
            .expect("request");
        let credentials = aws_credential_types::Credentials::new(
            "AKIDEXAMPLE",
            "secret",
            Some("session".to_owned()),
            None,
            "test",
        );
        sign_request(
            &mut request,
            b"{}",
            credentials,
            "eu-west-1",
            SystemTime::UNIX_EPOCH,
        )
        .expect("signed");
        let authorization = request.headers()["authorization"].to_str().expect("text");
        assert!(
            authorization.starts_with(
                "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/19700101/eu-west-1/lambda/aws4_request"
            ),
            "{authorization}"
        );
        assert!(request.headers().contains_key("x-amz-date"));
        assert_eq!(request.headers()["x-amz-security-token"], "session");
    }
}
