//! Server-streaming RPCs over HTTP: Server-Sent Events by default, WebSocket
//! when the request asks to upgrade. Both carry the same messages: each
//! streamed message as canonical proto3 JSON, then how the stream ended.
//!
//! SSE: `event: update` with the message as `data`, comment heartbeats,
//! `event: end` when the service ends the stream, `event: error` with the
//! error body (as the unary routes answer it) when it fails. An error before
//! the first message (NOT_FOUND, PERMISSION_DENIED, …) is a plain HTTP error.
//!
//! WebSocket: a text frame per message, pings as heartbeats; a failure is a
//! text frame `{"error": …}` and then a close frame with code 4000 + the HTTP
//! status (4404, 4403, 4503, …): browsers cannot read the status of a refused
//! handshake, so the upgrade always succeeds and the close code tells.
//!
//! Browsers' `EventSource` and `WebSocket` cannot set `Authorization`, so the
//! stream routes also take the token as the `access_token` query parameter
//! (RFC 6750 §2.3). It is taken out of the query before transcoding.

use std::{convert::Infallible, time::Duration};

use axum::{
    extract::{
        FromRequestParts as _,
        ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade},
    },
    response::{
        IntoResponse as _, Response,
        sse::{Event, KeepAlive, Sse},
    },
};
use futures::{Stream, StreamExt as _};
use prost::bytes::Bytes;
use prost_reflect::MessageDescriptor;
use tokio::sync::watch;
use tonic::{Code, Streaming};

use crate::{error::ApiError, transcode};

/// How long a stream may stay open at the edge. The services end theirs
/// sooner (`server.stream_max_age_ms`); this only keeps the peer channel's
/// unary default deadline off a stream.
pub(crate) const STREAM_DEADLINE: Duration = Duration::from_secs(24 * 3600);

/// What the stream produced next.
#[derive(Debug)]
pub(crate) enum Item {
    /// One message, as JSON.
    Message(Vec<u8>),
    /// The service ended the stream with OK.
    End,
    /// The stream failed (or the edge is shutting down).
    Failed(ApiError),
}

/// True when the request asks for a WebSocket (`Upgrade: websocket`).
pub(crate) fn wants_websocket(headers: &http::HeaderMap) -> bool {
    headers
        .get(http::header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

/// Splits `access_token` off a query string: the token, and the query
/// without it.
pub(crate) fn take_access_token(query: Option<&str>) -> (Option<String>, Option<String>) {
    let Some(query) = query else {
        return (None, None);
    };
    let mut token = None;
    let rest: Vec<&str> = query
        .split('&')
        .filter(|pair| match pair.split_once('=') {
            Some(("access_token", value)) => {
                token = crate::routes::percent_decode(&value.replace('+', " "));
                false
            }
            _ => true,
        })
        .collect();
    let rest = (!rest.is_empty()).then(|| rest.join("&"));
    (token, rest)
}

/// The messages of `stream` as JSON until it ends, fails, or `stop` turns
/// true (the edge shutting down: the client is told to reconnect).
pub(crate) fn items(
    stream: Streaming<Bytes>,
    output: MessageDescriptor,
    stop: watch::Receiver<bool>,
) -> impl Stream<Item = Item> + Send + 'static {
    futures::stream::unfold(Some((stream, stop)), move |state| {
        let output = output.clone();
        async move {
            let (mut stream, mut stop) = state?;
            let stopping = async {
                let _ = stop.wait_for(|s| *s).await;
            };
            let next = tokio::select! {
                next = stream.message() => next,
                () = stopping => {
                    let e = ApiError::new(Code::Unavailable, "the edge is shutting down; reconnect");
                    return Some((Item::Failed(e), None));
                }
            };
            Some(match next {
                Ok(Some(bytes)) => match transcode::response_json(output, bytes) {
                    Ok(json) => (Item::Message(json), Some((stream, stop))),
                    Err(e) => (Item::Failed(e), None),
                },
                Ok(None) => (Item::End, None),
                Err(status) => (Item::Failed(ApiError::from_status(&status)), None),
            })
        }
    })
}

/// The stream as Server-Sent Events.
pub(crate) fn sse(
    items: impl Stream<Item = Item> + Send + 'static,
    heartbeat: Duration,
) -> Response {
    let events = items.map(|item| {
        Ok::<_, Infallible>(match item {
            Item::Message(json) => Event::default()
                .event("update")
                .data(String::from_utf8_lossy(&json)),
            Item::End => Event::default().event("end").data("{}"),
            Item::Failed(e) => Event::default().event("error").data(e.body().to_string()),
        })
    });
    let mut resp = Sse::new(events)
        .keep_alive(KeepAlive::new().interval(heartbeat).text("keep-alive"))
        .into_response();
    // Proxies (nginx) buffer responses unless told not to, which would hold
    // every event back.
    resp.headers_mut()
        .insert("x-accel-buffering", http::HeaderValue::from_static("no"));
    resp
}

/// The stream (or the error that prevented it) over a WebSocket, if the
/// request is a valid upgrade; otherwise the handshake's error.
pub(crate) async fn websocket(
    parts: &mut http::request::Parts,
    opened: Result<std::pin::Pin<Box<dyn Stream<Item = Item> + Send>>, ApiError>,
    heartbeat: Duration,
) -> Response {
    let upgrade = match WebSocketUpgrade::from_request_parts(parts, &()).await {
        Ok(u) => u,
        Err(rejection) => {
            return ApiError::new(
                Code::InvalidArgument,
                format!("bad WebSocket handshake: {}", rejection.body_text()),
            )
            .into_response();
        }
    };
    upgrade.on_upgrade(move |socket| async move {
        match opened {
            Ok(items) => relay(socket, items, heartbeat).await,
            Err(e) => {
                let mut socket = socket;
                let _ = close_with(&mut socket, Some(&e)).await;
            }
        }
    })
}

/// Sends each item, pings every `heartbeat`, and stops when the client goes.
async fn relay(
    mut socket: WebSocket,
    mut items: std::pin::Pin<Box<dyn Stream<Item = Item> + Send>>,
    heartbeat: Duration,
) {
    let mut ping = tokio::time::interval(heartbeat);
    ping.tick().await;
    loop {
        tokio::select! {
            item = items.next() => match item {
                Some(Item::Message(json)) => {
                    let text = String::from_utf8_lossy(&json).into_owned();
                    if socket.send(Message::Text(text.into())).await.is_err() {
                        return;
                    }
                }
                Some(Item::End) | None => {
                    let _ = close_with(&mut socket, None).await;
                    return;
                }
                Some(Item::Failed(e)) => {
                    let _ = close_with(&mut socket, Some(&e)).await;
                    return;
                }
            },
            incoming = socket.recv() => match incoming {
                // The client has nothing to say on this stream; a close or a
                // broken connection ends it (and the gRPC stream with it).
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return,
                Some(Ok(_)) => {}
            },
            _ = ping.tick() => {
                if socket.send(Message::Ping(Bytes::new())).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// Ends the socket: a normal close, or the error as a text frame and a close
/// code of 4000 + its HTTP status.
async fn close_with(socket: &mut WebSocket, error: Option<&ApiError>) -> Result<(), axum::Error> {
    let frame = match error {
        None => CloseFrame {
            code: 1000,
            reason: "stream ended".into(),
        },
        Some(e) => {
            socket
                .send(Message::Text(e.body().to_string().into()))
                .await?;
            // A close reason is at most 123 bytes.
            let mut reason = crate::error::code_name(e.code).to_owned();
            reason.truncate(123);
            CloseFrame {
                code: 4000 + e.http.as_u16(),
                reason: reason.into(),
            }
        }
    };
    socket.send(Message::Close(Some(frame))).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_access_token_leaves_the_query() {
        assert_eq!(take_access_token(None), (None, None));
        assert_eq!(
            take_access_token(Some("access_token=a%2Eb&x=1")),
            (Some("a.b".to_owned()), Some("x=1".to_owned()))
        );
        assert_eq!(
            take_access_token(Some("access_token=t")),
            (Some("t".to_owned()), None)
        );
        assert_eq!(
            take_access_token(Some("userOrders.userId=u")),
            (None, Some("userOrders.userId=u".to_owned()))
        );
    }
}
