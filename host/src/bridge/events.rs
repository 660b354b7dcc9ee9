//! `GET /events` (and `/sse`): the outbound events as Server-Sent Events,
//! resumed with `Last-Event-ID`, with a ping on a kernel timer.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use futures_util::StreamExt;
use serde_json::json;
use tokio::sync::Notify;

use super::access::Shared;
use super::error::{error, ApiError};
use crate::events::{Closed, Item};

/// Closes the connection it was handed to (see `bridge::serve`): how a
/// subscriber whose client stopped reading is cut off, since its stream is
/// then never polled.
#[derive(Clone)]
pub(crate) struct CutOff(pub(crate) Arc<Notify>);

const PING_EVERY: Duration = Duration::from_secs(20);

pub(super) async fn events(
    State(b): State<Shared>,
    cut_off: Option<Extension<CutOff>>,
    headers: HeaderMap,
    Query(query): Query<Vec<(String, String)>>,
) -> Result<Response, ApiError> {
    let mut since_params = query.into_iter().filter(|(k, _)| k == "since").map(|(_, v)| v);
    let since_param = since_params.next();
    if since_params.next().is_some() {
        return Err(error(StatusCode::BAD_REQUEST, "since is given more than once"));
    }
    let since = headers
        .get("last-event-id")
        .map(|v| v.to_str().unwrap_or("x").trim().to_string())
        .or(since_param)
        .as_deref()
        .map(str::parse::<u64>)
        .transpose()
        .map_err(|_| error(StatusCode::BAD_REQUEST, "Last-Event-ID / since must be an event id (a whole number)"))?;
    let sub = b.core.subscribe(since, cut_off.map(|Extension(c)| c.0));
    let connected = futures_util::stream::once(async { Ok::<_, Infallible>(Event::default().comment("connected")) });
    let stream = futures_util::stream::unfold(Some(sub), |sub| async move {
        let mut sub = sub?;
        let event = match sub.next().await {
            Ok(Item::Event(e)) => Event::default().id(e.id.to_string()).data(&e.data),
            // Its id is the last one it stands for, so a client resuming
            // from it does not ask for the missing events again.
            Ok(Item::Gap { from, to }) => Event::default()
                .id(to.to_string())
                .data(json!({ "type": "gap", "from": from, "to": to }).to_string()),
            Err(Closed::Lagged { behind }) => {
                tracing::info!(behind, "disconnecting a subscriber that fell behind");
                let why = format!("too far behind ({behind} events); reconnect with Last-Event-ID");
                return Some((Ok(Event::default().comment(why)), None));
            }
            Err(Closed::Shutdown) => return None,
        };
        Some((Ok(event), Some(sub)))
    });
    Ok(with_pings(connected.chain(stream)))
}

/// `events` as an SSE response with a ping every 20 s, on a kernel timer:
/// it wakes the process once a ping, where a tokio timer 20 s out wakes it
/// three times (the timer wheel moves it down a level each time). Without
/// one, axum's keep-alive. The response ends when `events` does.
pub(crate) fn with_pings<S>(events: S) -> Response
where
    S: futures_util::Stream<Item = Result<Event, Infallible>> + Send + 'static,
{
    let ticks = match tokio_timerfd::Interval::new_interval(PING_EVERY) {
        Ok(ticks) => ticks,
        Err(e) => {
            tracing::warn!("no timerfd for the SSE ping ({e}); using tokio's timer");
            return Sse::new(events).keep_alive(KeepAlive::new().interval(PING_EVERY).text("ping")).into_response();
        }
    };
    let ping = || Some(Ok(Event::default().comment("ping")));
    // The stream ends when the events do (`None`), pings or not.
    let events = events.map(Some).chain(futures_util::stream::once(async { None }));
    let merged = futures_util::stream::select(events, ticks.map(move |_| ping()))
        .take_while(|e| std::future::ready(e.is_some()))
        .filter_map(std::future::ready);
    Sse::new(merged).into_response()
}
