//! HTTP routing by method and path, on `matchit`'s radix tree.

use std::sync::Arc;

use compact_str::CompactString;
use http::Method;

use crate::handler::Endpoint;

/// Where a request was routed: the matched pattern, its parameters and the endpoint.
pub(crate) struct Resolved<'r> {
    pub(crate) route: Option<Arc<str>>,
    /// `METHOD /pattern` of a method the route registers, written once when it was added.
    pub(crate) operation: Option<&'r str>,
    pub(crate) params: Params,
    pub(crate) endpoint: Endpoint,
}

/// The decoded path parameters of a matched route, in route order. Names and short values
/// are kept inline and the list is shared, so a context's clone (retry keeps one per
/// attempt) copies nothing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Params(Option<Arc<[(CompactString, CompactString)]>>);

impl Params {
    /// The value of `name`.
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.iter()
            .find(|(key, _)| *key == name)
            .map(|(_, value)| value)
    }

    /// Every parameter as `(name, value)`.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0
            .iter()
            .flat_map(|params| params.iter())
            .map(|(key, value)| (key.as_str(), value.as_str()))
    }
}

struct RouteEntry {
    pattern: Arc<str>,
    /// Each method's endpoint, with its operation name (`METHOD /pattern`).
    methods: Vec<(Method, Endpoint, Box<str>)>,
    any: Option<Endpoint>,
    allow: Arc<[Method]>,
}

/// Routes `{param}` and `{*catch_all}` patterns by method.
#[derive(Default)]
pub(crate) struct Router {
    tree: matchit::Router<usize>,
    routes: Vec<RouteEntry>,
}

impl Router {
    /// Adds `endpoint` for `method` (`None`: any method) on `pattern`.
    pub(crate) fn add(
        &mut self,
        method: Option<Method>,
        pattern: &str,
        endpoint: Endpoint,
    ) -> Result<(), String> {
        if !pattern.starts_with('/') {
            return Err(format!("route `{pattern}` must start with `/`"));
        }
        let index = match self.routes.iter().position(|r| &*r.pattern == pattern) {
            Some(index) => index,
            None => {
                self.tree
                    .insert(pattern, self.routes.len())
                    .map_err(|error| format!("route `{pattern}`: {error}"))?;
                self.routes.push(RouteEntry {
                    pattern: Arc::from(pattern),
                    methods: Vec::new(),
                    any: None,
                    allow: Arc::from(Vec::new()),
                });
                self.routes.len() - 1
            }
        };
        let entry = &mut self.routes[index];
        match method {
            Some(method) => {
                if entry.methods.iter().any(|(m, ..)| *m == method) {
                    return Err(format!("route `{method} {pattern}` is registered twice"));
                }
                let operation = format!("{method} {pattern}").into_boxed_str();
                entry.methods.push((method, endpoint, operation));
                // A GET route answers HEAD too (without its body), unless HEAD has its own.
                let mut allow: Vec<Method> =
                    entry.methods.iter().map(|(m, ..)| m.clone()).collect();
                if allow.contains(&Method::GET) && !allow.contains(&Method::HEAD) {
                    allow.push(Method::HEAD);
                }
                entry.allow = Arc::from(allow);
            }
            None => {
                if entry.any.is_some() {
                    return Err(format!("route `* {pattern}` is registered twice"));
                }
                entry.any = Some(endpoint);
            }
        }
        Ok(())
    }

    /// Finds the endpoint for a request. `decode` says whether the path is still
    /// percent-encoded, so that parameters are handed out decoded.
    pub(crate) fn resolve(&self, method: &Method, path: &str, decode: bool) -> Resolved<'_> {
        // Literal segments match however the client encoded them (`/st%C3%A4dte` is
        // `/städte`, `%40me` is `@me`), as on a REST API, whose paths come decoded.
        let literal = if decode {
            decoded_but_slashes(path)
        } else {
            std::borrow::Cow::Borrowed(path)
        };
        let path: &str = &literal;
        let Ok(matched) = self.tree.at(path) else {
            return Resolved {
                route: None,
                operation: None,
                params: Params::default(),
                endpoint: Endpoint::NotFound,
            };
        };
        let entry = &self.routes[*matched.value];
        let registered = entry
            .methods
            .iter()
            .find(|(m, ..)| m == method)
            .or_else(|| {
                // HEAD is GET without the body (RFC 9110 §9.3.2), which the App leaves out.
                (*method == Method::HEAD)
                    .then(|| entry.methods.iter().find(|(m, ..)| *m == Method::GET))
                    .flatten()
            });
        let operation = registered.map(|(.., operation)| &**operation);
        let endpoint = registered
            .map(|(_, endpoint, _)| endpoint.clone())
            .or_else(|| entry.any.clone())
            .unwrap_or_else(|| Endpoint::MethodNotAllowed(entry.allow.clone()));
        let params = (!matched.params.is_empty()).then(|| {
            matched
                .params
                .iter()
                .map(|(key, value)| {
                    let value = if decode {
                        CompactString::from(
                            percent_encoding::percent_decode_str(value).decode_utf8_lossy(),
                        )
                    } else {
                        CompactString::from(value)
                    };
                    (CompactString::from(key), value)
                })
                .collect()
        });
        Resolved {
            route: Some(entry.pattern.clone()),
            operation,
            params: Params(params),
            endpoint,
        }
    }
}

/// `path` with its percent-escapes decoded, except those of `/` and `%` (which would change
/// the segments, or be decoded twice when parameters are), when that leaves UTF-8; as it
/// is otherwise.
fn decoded_but_slashes(path: &str) -> std::borrow::Cow<'_, str> {
    if !path.contains('%') {
        return std::borrow::Cow::Borrowed(path);
    }
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| bytes.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok())
            .filter(|b| *b != b'/' && *b != b'%');
        match escaped {
            Some(byte) => {
                out.push(byte);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    match String::from_utf8(out) {
        Ok(decoded) => std::borrow::Cow::Owned(decoded),
        Err(_) => std::borrow::Cow::Borrowed(path),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint() -> Endpoint {
        Endpoint::new(|| async { Ok::<_, crate::Error>(()) })
    }

    #[test]
    fn methods_params_and_allow() {
        let mut router = Router::default();
        router
            .add(Some(Method::GET), "/orders/{id}", endpoint())
            .expect("added");
        router
            .add(Some(Method::DELETE), "/orders/{id}", endpoint())
            .expect("added");
        router
            .add(None, "/files/{*rest}", endpoint())
            .expect("added");

        let found = router.resolve(&Method::GET, "/orders/a%20b", true);
        assert_eq!(found.route.as_deref(), Some("/orders/{id}"));
        assert_eq!(found.operation, Some("GET /orders/{id}"));
        assert_eq!(found.params.iter().collect::<Vec<_>>(), [("id", "a b")]);
        assert_eq!(found.params.get("id"), Some("a b"));
        assert_eq!(found.params.get("rest"), None);
        assert!(matches!(found.endpoint, Endpoint::Handler(_)));

        let refused = router.resolve(&Method::POST, "/orders/1", true);
        match refused.endpoint {
            Endpoint::MethodNotAllowed(allow) => {
                assert_eq!(&*allow, &[Method::GET, Method::DELETE, Method::HEAD])
            }
            other => panic!("unexpected {other:?}"),
        }

        // HEAD finds the GET route.
        let head = router.resolve(&Method::HEAD, "/orders/1", true);
        assert_eq!(head.operation, Some("GET /orders/{id}"));
        assert!(matches!(head.endpoint, Endpoint::Handler(_)));

        let any = router.resolve(&Method::PATCH, "/files/a/b/c", true);
        assert_eq!(any.params.iter().collect::<Vec<_>>(), [("rest", "a/b/c")]);
        let long = "a-value-longer-than-twenty-four-bytes%2Fwith-an-escape";
        let long_found = router.resolve(&Method::GET, &format!("/orders/{long}"), true);
        assert_eq!(
            long_found.params.get("id"),
            Some("a-value-longer-than-twenty-four-bytes/with-an-escape")
        );
        let raw = router.resolve(&Method::GET, "/orders/a%20b", false);
        assert_eq!(raw.params.get("id"), Some("a%20b"));
        assert_eq!(
            router.resolve(&Method::GET, "/nope", true).params,
            Params::default()
        );
        assert!(matches!(
            router.resolve(&Method::GET, "/nope", true).endpoint,
            Endpoint::NotFound
        ));
    }

    #[test]
    fn conflicts_are_configuration_errors() {
        let mut router = Router::default();
        router
            .add(Some(Method::GET), "/a/{id}", endpoint())
            .expect("added");
        assert!(
            router
                .add(Some(Method::GET), "/a/{id}", endpoint())
                .is_err()
        );
        assert!(
            router
                .add(Some(Method::GET), "/a/{name}", endpoint())
                .is_err()
        );
        assert!(
            router
                .add(Some(Method::GET), "no-slash", endpoint())
                .is_err()
        );
    }
}
