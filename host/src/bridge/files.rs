//! `GET /files/<id>`: a reply's file, streamed from the outbox.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

use super::access::Shared;
use super::error::{error, ApiError};

/// A reply's file, as it was when Claude sent it.
pub(super) async fn file(State(b): State<Shared>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let Some(f) = b.core.files.get(&id) else {
        return Err(error(StatusCode::NOT_FOUND, format!("no file {id:?} in this session's replies")));
    };
    let opened = tokio::fs::File::open(&f.path)
        .await
        .map_err(|e| error(StatusCode::INTERNAL_SERVER_ERROR, format!("cannot read file {id:?}: {e}")))?;
    let headers = [
        (header::CONTENT_TYPE, f.mime.clone()),
        (header::CONTENT_LENGTH, f.size.to_string()),
        (header::CONTENT_DISPOSITION, attachment(&f.name)),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff".into()),
        (header::CACHE_CONTROL, "no-store".into()),
    ];
    Ok((headers, Body::from_stream(tokio_util::io::ReaderStream::new(opened))).into_response())
}

/// `attachment; filename="..."`, with the UTF-8 name as `filename*`
/// (RFC 6266) when it is not plain ASCII.
fn attachment(name: &str) -> String {
    let ascii: String = name.chars().map(|c| if c.is_ascii_graphic() || c == ' ' { c } else { '_' }).collect();
    let ascii = ascii.replace(['"', '\\'], "_");
    if ascii == name {
        return format!("attachment; filename=\"{ascii}\"");
    }
    let utf8 = percent_encoding::utf8_percent_encode(name, percent_encoding::NON_ALPHANUMERIC);
    format!("attachment; filename=\"{ascii}\"; filename*=UTF-8''{utf8}")
}
