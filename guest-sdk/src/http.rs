//! Blocking HTTP requests over `wasi:http`, for filters their `[[filter]]`
//! entry grants outbound hosts (`allowed_outbound_hosts`).
//!
//! The host checks every request, redirects included, against that list
//! before it leaves: a host not on it is refused with
//! [`Error`]`("HTTP request denied ...")`. Each request counts against the
//! call's deadline (`event_timeout_ms` in `on_event`). A component that
//! never calls [`send`] does not import `wasi:http`, and loads without a
//! grant.
//!
//! ```no_run
//! use opzero_guest_sdk::http;
//!
//! let response = http::post("https://ntfy.sh/my-topic", "text/plain", b"Claude is done".to_vec())?;
//! if response.status >= 300 {
//!     return Err(http::Error(format!("ntfy said {}", response.status)));
//! }
//! # Ok::<(), http::Error>(())
//! ```

use crate::__bindings::wasi::http::outgoing_handler;
use crate::__bindings::wasi::http::types::{
    ErrorCode, Fields, IncomingBody, Method, OutgoingBody, OutgoingRequest, Scheme,
};
use crate::__bindings::wasi::io::streams::StreamError;

/// Redirects followed before giving up.
const MAX_REDIRECTS: usize = 5;

/// A request: build one with [`Request::new`], or use [`get`] and [`post`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// "GET", "POST", ...
    pub method: String,
    /// `https://host[:port]/path?query`.
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// What came back (after redirects).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// Why a request failed: refused by the host, unreachable, a bad URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error(pub String);

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

impl Request {
    pub fn new(method: &str, url: &str) -> Request {
        Request { method: method.into(), url: url.into(), headers: Vec::new(), body: Vec::new() }
    }

    pub fn header(mut self, name: &str, value: &str) -> Request {
        self.headers.push((name.into(), value.into()));
        self
    }

    pub fn body(mut self, body: Vec<u8>) -> Request {
        self.body = body;
        self
    }
}

pub fn get(url: &str) -> Result<Response, Error> {
    send(Request::new("GET", url))
}

pub fn post(url: &str, content_type: &str, body: Vec<u8>) -> Result<Response, Error> {
    send(Request::new("POST", url).header("content-type", content_type).body(body))
}

/// Sends `request` and waits for the whole response, following up to five
/// redirects (each one checked by the host like the first request).
pub fn send(mut request: Request) -> Result<Response, Error> {
    for _ in 0..=MAX_REDIRECTS {
        let response = send_once(&request)?;
        let location = response.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case("location"));
        match (response.status, location) {
            (301 | 302 | 303 | 307 | 308, Some((_, location))) => {
                request.url = resolve(&request.url, location)?;
                if response.status == 303 || (response.status != 307 && response.status != 308 && request.method == "POST") {
                    request.method = "GET".into();
                    request.body.clear();
                }
            }
            _ => return Ok(response),
        }
    }
    Err(Error(format!("more than {MAX_REDIRECTS} redirects")))
}

/// A request's URL, parsed (by the `url` crate) into what wasi:http asks
/// for: the scheme, the authority (`host[:port]`) and the path with query.
fn parts(url: &str) -> Result<(url::Url, String, String), Error> {
    let parsed = url::Url::parse(url).map_err(|e| Error(format!("{url:?} is not a URL: {e}")))?;
    let host = parsed.host_str().ok_or_else(|| Error(format!("{url:?} names no host")))?;
    let authority = match parsed.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_string(),
    };
    let path = match parsed.query() {
        Some(q) => format!("{}?{q}", parsed.path()),
        None => parsed.path().to_string(),
    };
    Ok((parsed, authority, path))
}

/// A redirect's `Location`, made absolute against the URL it came from.
fn resolve(from: &str, location: &str) -> Result<String, Error> {
    let base = url::Url::parse(from).map_err(|e| Error(format!("{from:?} is not a URL: {e}")))?;
    base.join(location)
        .map(String::from)
        .map_err(|e| Error(format!("redirect to {location:?} from {from}: {e}")))
}

fn send_once(request: &Request) -> Result<Response, Error> {
    let (url, authority, path) = parts(&request.url)?;
    let fail = |what: &str| Error(format!("{what} of {}", request.url));
    let mut headers: Vec<(String, Vec<u8>)> =
        request.headers.iter().map(|(k, v)| (k.to_ascii_lowercase(), v.as_bytes().to_vec())).collect();
    // The whole body is known: say its length rather than send it chunked.
    if !request.body.is_empty() && !headers.iter().any(|(k, _)| k == "content-length") {
        headers.push(("content-length".into(), request.body.len().to_string().into_bytes()));
    }
    let fields = Fields::from_list(&headers).map_err(|e| Error(format!("bad header: {e:?}")))?;
    let outgoing = OutgoingRequest::new(fields);
    let method = match request.method.as_str() {
        "GET" => Method::Get,
        "POST" => Method::Post,
        "PUT" => Method::Put,
        "DELETE" => Method::Delete,
        "PATCH" => Method::Patch,
        "HEAD" => Method::Head,
        other => Method::Other(other.into()),
    };
    let scheme = match url.scheme() {
        "https" => Scheme::Https,
        "http" => Scheme::Http,
        other => Scheme::Other(other.into()),
    };
    outgoing.set_method(&method).map_err(|()| fail("the method"))?;
    outgoing.set_scheme(Some(&scheme)).map_err(|()| fail("the scheme"))?;
    outgoing.set_authority(Some(&authority)).map_err(|()| fail("the host"))?;
    outgoing.set_path_with_query(Some(&path)).map_err(|()| fail("the path"))?;

    let body = outgoing.body().map_err(|()| fail("the body"))?;
    {
        let stream = body.write().map_err(|()| fail("the body"))?;
        for chunk in request.body.chunks(4096) {
            stream.blocking_write_and_flush(chunk).map_err(|e| Error(format!("sending the body: {}", stream_error(e))))?;
        }
    }
    let future = outgoing_handler::handle(outgoing, None).map_err(|e| error(&request.url, e))?;
    OutgoingBody::finish(body, None).map_err(|e| error(&request.url, e))?;
    let response = loop {
        match future.get() {
            Some(Ok(Ok(response))) => break response,
            Some(Ok(Err(e))) => return Err(error(&request.url, e)),
            Some(Err(())) => return Err(fail("the response")),
            None => future.subscribe().block(),
        }
    };
    let status = response.status();
    let headers = response
        .headers()
        .entries()
        .into_iter()
        .map(|(k, v)| (k, String::from_utf8_lossy(&v).into_owned()))
        .collect();
    let incoming = response.consume().map_err(|()| fail("the response body"))?;
    let mut bytes = Vec::new();
    {
        let stream = incoming.stream().map_err(|()| fail("the response body"))?;
        loop {
            match stream.blocking_read(64 * 1024) {
                Ok(chunk) => bytes.extend_from_slice(&chunk),
                Err(StreamError::Closed) => break,
                Err(e) => return Err(Error(format!("reading {}: {}", request.url, stream_error(e)))),
            }
        }
    }
    IncomingBody::finish(incoming);
    Ok(Response { status, headers, body: bytes })
}

fn error(url: &str, code: ErrorCode) -> Error {
    match code {
        ErrorCode::HttpRequestDenied => Error(format!("HTTP request denied: {url} is not in this filter's allowed_outbound_hosts")),
        other => Error(format!("{url}: {other:?}")),
    }
}

fn stream_error(e: StreamError) -> String {
    match e {
        StreamError::Closed => "closed".into(),
        StreamError::LastOperationFailed(e) => e.to_debug_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirects_resolve_against_the_url_they_came_from() {
        let r = |from, to| resolve(from, to).unwrap();
        assert_eq!(r("https://a.test/x/y?q", "/z"), "https://a.test/z");
        assert_eq!(r("https://a.test/x/y", "z"), "https://a.test/x/z");
        assert_eq!(r("https://a.test/x/y", "../z"), "https://a.test/z");
        assert_eq!(r("https://a.test/x", "//b.test/p"), "https://b.test/p");
        assert_eq!(r("https://a.test/x", "http://b.test:81/"), "http://b.test:81/");
        let p = |u| parts(u).map(|(_, a, p)| (a, p)).unwrap();
        assert_eq!(p("http://h:8/p?q"), ("h:8".into(), "/p?q".into()));
        assert_eq!(p("https://h"), ("h".into(), "/".into()));
        assert_eq!(p("https://h:443/"), ("h".into(), "/".into()));
        assert!(parts("h/p").is_err());
    }
}
