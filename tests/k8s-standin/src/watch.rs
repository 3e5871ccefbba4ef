//! Watches: replay from a resourceVersion, `410 Expired`, bookmarks, selector transitions
//! and the streaming response.

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::header;
use axum::response::Response;
use serde_json::{json, Value};
use tokio::sync::{broadcast, mpsc, watch};

use crate::handlers::object_filter;
use crate::router::{Query, Target};
use crate::selectors::ObjectFilter;
use crate::status::{ApiError, ApiResult, FieldError};
use crate::store::{Inner, StoredEvent};
use crate::DEFAULT_WATCH_TIMEOUT;

impl Inner {
    /// Start a watch: replay (or synthesise) the initial events under the lock, then stream
    /// live ones from the broadcast channel.
    pub(crate) fn watch(&self, target: &Target, query: &Query) -> ApiResult<Response> {
        let info = target.info.ok_or_else(ApiError::no_resource)?;
        if target.subresource.is_some() || info.virtual_only {
            return Err(ApiError::no_resource());
        }
        let filter = object_filter(info, target, query)?;
        let since =
            match query.get("resourceVersion").filter(|rv| !rv.is_empty()) {
                None => None,
                Some(rv) => Some(rv.parse::<u64>().map_err(|_| {
                    ApiError::bad_request(format!("invalid resource version: {rv}"))
                })?),
            };
        let send_initial_events = query.flag("sendInitialEvents");
        let bookmarks = query.flag("allowWatchBookmarks");
        if send_initial_events
            && (query.get("resourceVersionMatch") != Some("NotOlderThan") || !bookmarks)
        {
            return Err(ApiError::invalid(
                "meta.k8s.io",
                "ListOptions",
                "",
                &[FieldError::forbidden(
                    "resourceVersionMatch",
                    "sendInitialEvents requires setting resourceVersionMatch to NotOlderThan and allowWatchBookmarks",
                )],
            ));
        }
        let timeout = query
            .get("timeoutSeconds")
            .and_then(|t| t.parse::<u64>().ok())
            .map(Duration::from_secs)
            .unwrap_or(DEFAULT_WATCH_TIMEOUT);

        let mut initial = Vec::new();
        let mut close_after_initial = false;
        let state = self.state();
        let receiver = state.events.subscribe();
        let start_rv = state.rv;
        let bookmark_interval = state.bookmark_interval;
        match since {
            Some(rv) if rv > state.rv => {
                initial.push(too_large_event(rv, state.rv));
                close_after_initial = true;
            }
            // No resourceVersion, "0", or a streaming list: the current state, as ADDED events.
            None | Some(0) => {
                for object in state.matching(&filter) {
                    initial.push(event_line("ADDED", &object));
                }
            }
            Some(_) if send_initial_events => {
                for object in state.matching(&filter) {
                    initial.push(event_line("ADDED", &object));
                }
            }
            Some(rv) if rv < state.compacted_rv => {
                let status = ApiError::new(
                    410,
                    "Expired",
                    format!("too old resource version: {rv} ({})", state.compacted_rv),
                )
                .to_status();
                initial.push(event_line("ERROR", &status));
                close_after_initial = true;
            }
            Some(rv) => {
                for event in state.history.iter().filter(|e| e.rv > rv) {
                    if let Some((kind, object)) = filter.watch_event(event) {
                        initial.push(event_line(kind, &object));
                    }
                }
            }
        }
        if send_initial_events && !close_after_initial {
            initial.push(event_line(
                "BOOKMARK",
                &json!({
                    "kind": info.kind,
                    "apiVersion": info.api_version(),
                    "metadata": {
                        "resourceVersion": start_rv.to_string(),
                        "annotations": {"k8s.io/initial-events-end": "true"},
                    },
                }),
            ));
        }
        drop(state);

        let (sender, mut lines) = mpsc::channel::<Bytes>(64);
        let stream = WatchStream {
            filter,
            receiver,
            last_rv: start_rv,
            sender,
            bookmarks: bookmarks.then_some(bookmark_interval),
            deadline: tokio::time::Instant::now() + timeout,
            shutdown: self.shutdown.clone(),
        };
        tokio::spawn(stream.run(initial, close_after_initial));
        let body = futures::stream::poll_fn(move |cx| {
            lines
                .poll_recv(cx)
                .map(|line| line.map(Ok::<Bytes, std::io::Error>))
        });
        Ok(Response::builder()
            .status(200)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from_stream(body))
            .expect("build watch response"))
    }
}

fn event_line(kind: &str, object: &Value) -> Bytes {
    let mut line =
        serde_json::to_vec(&json!({"type": kind, "object": object})).expect("serialise event");
    line.push(b'\n');
    Bytes::from(line)
}

fn too_large_event(asked: u64, current: u64) -> Bytes {
    let status = ApiError::new(
        504,
        "Timeout",
        format!("Too large resource version: {asked}, current: {current}"),
    )
    .with_details(json!({"causes": [{"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}], "retryAfterSeconds": 1}))
    .to_status();
    event_line("ERROR", &status)
}

/// One open watch: forwards matching events until timeout, disconnect, lag or shutdown.
struct WatchStream {
    pub(crate) filter: ObjectFilter,
    receiver: broadcast::Receiver<Arc<StoredEvent>>,
    /// Every event up to this resourceVersion has been considered (what a BOOKMARK reports).
    last_rv: u64,
    sender: mpsc::Sender<Bytes>,
    pub(crate) bookmarks: Option<Duration>,
    deadline: tokio::time::Instant,
    pub(crate) shutdown: watch::Receiver<bool>,
}

impl WatchStream {
    pub(crate) async fn run(mut self, initial: Vec<Bytes>, close_after_initial: bool) {
        for line in initial {
            if self.sender.send(line).await.is_err() {
                return;
            }
        }
        if close_after_initial {
            return;
        }
        let period = self.bookmarks.unwrap_or(Duration::from_secs(3600));
        let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        loop {
            let line = tokio::select! {
                received = self.receiver.recv() => match received {
                    Ok(event) => self.line_for(&event),
                    // A watcher that falls this far behind is closed, as the real watch cache
                    // closes slow watchers; the client re-watches from its last resourceVersion.
                    Err(_) => return,
                },
                _ = ticker.tick(), if self.bookmarks.is_some() => {
                    // Catch up first, so the bookmark's resourceVersion is truthful.
                    loop {
                        match self.receiver.try_recv() {
                            Ok(event) => {
                                if let Some(line) = self.line_for(&event) {
                                    if self.sender.send(line).await.is_err() {
                                        return;
                                    }
                                }
                            }
                            Err(broadcast::error::TryRecvError::Empty) => break,
                            Err(_) => return,
                        }
                    }
                    Some(event_line("BOOKMARK", &json!({
                        "kind": self.filter.info.kind,
                        "apiVersion": self.filter.info.api_version(),
                        "metadata": {"resourceVersion": self.last_rv.to_string()},
                    })))
                }
                _ = tokio::time::sleep_until(self.deadline) => return,
                _ = self.sender.closed() => return,
                _ = self.shutdown.changed() => return,
            };
            if let Some(line) = line {
                if self.sender.send(line).await.is_err() {
                    return;
                }
            }
        }
    }

    fn line_for(&mut self, event: &StoredEvent) -> Option<Bytes> {
        if event.rv <= self.last_rv {
            return None;
        }
        self.last_rv = event.rv;
        self.filter
            .watch_event(event)
            .map(|(kind, object)| event_line(kind, &object))
    }
}
