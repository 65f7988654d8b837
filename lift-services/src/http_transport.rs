//! HTTP to a Function URL (or any HTTP endpoint), signed with SigV4 when the URL uses IAM
//! auth.

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
/// path appended. With [`HttpTransport::signed`], requests are signed with SigV4 for the
/// `lambda` service in the instance's region (Function URLs with `AWS_IAM` auth).
#[derive(Clone)]
pub struct HttpTransport {
    client: HttpsClient,
    credentials: Option<SharedCredentialsProvider>,
    local: Option<std::sync::Arc<str>>,
}

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
        })
    }

    /// Signs every request with SigV4 using `credentials` (for example
    /// `lift_core::aws::sdk_config().await.credentials_provider()`).
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

/// `base` as the emulator at `local` serves it, when it is an AWS Function URL.
fn localized<'a>(base: &'a str, local: Option<&str>) -> std::borrow::Cow<'a, str> {
    let Some(local) = local else {
        return base.into();
    };
    let Some(rest) = base.strip_prefix("https://") else {
        return base.into();
    };
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    match host.split_once(".lambda-url.") {
        Some((id, domain)) if domain.ends_with(".on.aws") && !id.is_empty() => {
            format!("{local}/_aws/lambda-url/{id}/{path}").into()
        }
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
            let Some(base) = endpoints
                .function_url
                .as_deref()
                .or(endpoints.http_url.as_deref())
            else {
                return Err(TransportError::NoEndpoint {
                    instance: call.instance.id.to_string(),
                }
                .into());
            };
            let request = &call.request;
            let mut builder = http::Request::builder()
                .method(request.method.clone())
                .uri(url(&localized(base, this.local.as_deref()), &request.path));
            for (name, value) in &request.headers {
                builder = builder.header(name, value);
            }
            if let Some(caller) = &call.caller {
                builder = builder.header("x-lift-caller", caller.as_ref().clone());
            }
            let mut outgoing = builder.body(Full::new(request.body.clone()))?;
            if let Some(provider) = &this.credentials {
                let credentials = provider.provide_credentials().await?;
                sign_request(
                    &mut outgoing,
                    &request.body,
                    credentials,
                    &call.instance.region,
                    SystemTime::now(),
                )?;
            }
            let response = this.client.request(outgoing).await?;
            let status = response.status().as_u16();
            let headers = response.headers().clone();
            let body = response.into_body().collect().await?.to_bytes();
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
