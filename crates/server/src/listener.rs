//! The accept loop: HTTP/1.1 and HTTP/2 connections served by hyper, WebSocket upgrades on
//! `/ws` handed to the gateway, everything else to the warp routes. Stops accepting when
//! told to and lets in-flight requests finish.
//!
//! A connection must send its first byte, and then its request headers, within the header
//! read timeout (slowloris); a failed accept (out of file descriptors) backs off and is
//! counted, logged once per burst rather than once per attempt.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower_service::Service;
use warp::http::Request;

use crate::gateway;
use crate::http;
use crate::state::AppState;

/// How long requests already being served may take once the listener closes.
const REQUEST_GRACE: Duration = Duration::from_secs(5);

/// The first pause after a failed accept; it doubles up to [`MAX_ACCEPT_BACKOFF`] while
/// accepts keep failing.
const FIRST_ACCEPT_BACKOFF: Duration = Duration::from_millis(10);
const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

/// Serves `listener` until `stop` turns true.
pub(crate) async fn serve(
    listener: TcpListener,
    state: Arc<AppState>,
    mut stop: watch::Receiver<bool>,
    header_read_timeout: Duration,
    surface: http::Surface,
) {
    let routes = warp::service(http::routes(state.clone(), surface));
    let websocket = surface != http::Surface::Admin;
    let graceful = GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout);
    let mut backoff = FIRST_ACCEPT_BACKOFF;
    let mut failing_since: Option<(std::time::Instant, u64)> = None;
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.wait_for(|stopped| *stopped) => break,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => {
                if let Some((since, failures)) = failing_since.take() {
                    tracing::warn!(failures, lasted = ?since.elapsed(), "accepting connections again");
                }
                backoff = FIRST_ACCEPT_BACKOFF;
                accepted
            }
            Err(error) => {
                // Out of file descriptors and the like: one line when it starts, one when
                // it ends, a counter in between; back off so the loop does not spin.
                state.metrics.accept_errors.inc();
                match &mut failing_since {
                    Some((_, failures)) => *failures += 1,
                    None => {
                        tracing::warn!(%error, "cannot accept connections; backing off until it works again");
                        failing_since = Some((std::time::Instant::now(), 1));
                    }
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_ACCEPT_BACKOFF);
                continue;
            }
        };
        // Frames are batched by the sessions; Nagle would only add latency.
        let _ = stream.set_nodelay(true);
        let state = state.clone();
        let routes = routes.clone();
        let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
            let state = state.clone();
            let mut routes = routes.clone();
            request.extensions_mut().insert(gateway::PeerAddr(peer));
            async move {
                if websocket && gateway::serves(request.uri().path()) {
                    Ok::<_, Infallible>(gateway::serve(&state.gateway, request).await)
                } else {
                    routes.call(request).await
                }
            }
        });
        let builder = builder.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            // The version sniffing of the auto builder waits for the first bytes without a
            // timer of its own: a connection that sends nothing is dropped here.
            let mut first = [0_u8; 1];
            match tokio::time::timeout(header_read_timeout, stream.peek(&mut first)).await {
                Ok(Ok(n)) if n > 0 => {}
                _ => return,
            }
            let connection = builder
                .serve_connection_with_upgrades(TokioIo::new(stream), service)
                .into_owned();
            if let Err(error) = watcher.watch(connection).await {
                tracing::debug!(%error, "HTTP connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(REQUEST_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            "requests still running {REQUEST_GRACE:?} after the listener closed; dropping them"
        );
    }
}
