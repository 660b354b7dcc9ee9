//! The chat page's routes: its files, and signing a browser in and out.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde_json::{json, Value};

use std::sync::Arc;

use super::access::{cross_origin, Access, Door};
use super::error::{error, json_kind, read_body, ApiError};
use super::web;

/// One of the page's files, from the binary.
pub(crate) async fn asset(req: Request) -> Result<Response, ApiError> {
    let Some((_, kind, body)) = web::ASSETS.iter().find(|(path, ..)| *path == req.uri().path()) else {
        return Err(error(StatusCode::NOT_FOUND, "not found"));
    };
    let headers = [
        (header::CONTENT_TYPE, *kind),
        (header::CONTENT_SECURITY_POLICY, web::CSP),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::CACHE_CONTROL, "no-store"),
    ];
    Ok((headers, *body).into_response())
}

/// A one-time sign-in code for the page, for `opzero-host open`. With
/// `{"page_for": BASE}`, also a private page that sends a browser on to
/// `BASE/#code=CODE`, for `open` to hand the browser instead of the link.
pub(crate) async fn login_code(State(door): State<Arc<Door>>, body: Body) -> Result<Response, ApiError> {
    let bytes = read_body(&door.limits, false, body).await?;
    let bad_request = |message: String| Err(error(StatusCode::BAD_REQUEST, message));
    let base = match serde_json::from_slice::<Value>(&bytes) {
        _ if bytes.is_empty() => None,
        Ok(Value::Object(mut v)) => match v.remove("page_for") {
            None | Some(Value::Null) => None,
            Some(Value::String(base)) => match web_base(&base) {
                Some(base) => Some(base),
                None => return bad_request(format!("page_for {base:?} is not an http(s) URL with no path")),
            },
            Some(other) => return bad_request(format!("page_for must be a string, got {}", json_kind(&other))),
        },
        _ => return bad_request("the body must be empty or a JSON object {\"page_for\"?}".into()),
    };
    let mut body = json!({ "expires_in": web::CODE_LIFETIME.as_secs() });
    match base {
        None => body["code"] = json!(door.sign_in.new_code()),
        Some(base) => match door.sign_in.new_code_with_page(&base) {
            Ok((code, page)) => {
                body["code"] = json!(code);
                body["page"] = json!(page);
            }
            Err(e) => return Err(error(StatusCode::INTERNAL_SERVER_ERROR, format!("cannot write the sign-in page: {e}"))),
        },
    }
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

/// `scheme://authority` of an http(s) URL with no path beyond `/`.
fn web_base(base: &str) -> Option<String> {
    let uri = base.parse::<Uri>().ok()?;
    let (scheme, authority) = (uri.scheme_str()?, uri.authority()?);
    let bare = matches!(uri.path(), "" | "/") && uri.query().is_none() && !base.contains('#');
    (matches!(scheme, "http" | "https") && bare).then(|| format!("{scheme}://{authority}"))
}

/// The page trades a code for its token, which it sends as
/// `Authorization: Bearer` from then on. Nobody else's page may sign a
/// browser in.
pub(crate) async fn login(State(door): State<Arc<Door>>, method: Method, headers: HeaderMap, body: Body) -> Result<Response, ApiError> {
    if !door.same_origin(&method, &headers) {
        return Err(cross_origin());
    }
    let bytes = read_body(&door.limits, false, body).await?;
    let Some(code) = serde_json::from_slice::<Value>(&bytes).ok().and_then(|v| Some(v.get("code")?.as_str()?.to_string())) else {
        return Err(error(StatusCode::BAD_REQUEST, "code required"));
    };
    let token = door.sign_in.redeem(&code).map_err(|why| error(StatusCode::FORBIDDEN, format!("{why}; {}", door.sign_in_again())))?;
    let mut body = json!({ "ok": true, "token": token, "expires_in": door.sign_in.lifetime().as_secs() });
    // A host's page learns its session; the hub's, that it is the hub.
    match &door.session_id {
        Some(id) => body["sessionId"] = json!(id),
        None => body["hub"] = json!(true),
    }
    Ok(Json(body).into_response())
}

/// Ends the page's sign-in: its token is refused from then on.
pub(crate) async fn logout(State(door): State<Arc<Door>>, Extension(access): Extension<Access>) -> Result<Response, ApiError> {
    match access {
        Access::Page(signed_in) => {
            door.sign_in.sign_out(&signed_in);
            Ok(Json(json!({ "ok": true })).into_response())
        }
        _ => Err(error(StatusCode::BAD_REQUEST, "sign-out ends a page's sign-in: send its token as Authorization: Bearer")),
    }
}
