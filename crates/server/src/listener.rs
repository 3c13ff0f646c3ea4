//! The accept loop: HTTP/1.1 and HTTP/2 connections served by hyper, WebSocket upgrades on
//! `/ws` handed to the gateway, everything else to the warp routes. Stops accepting when
//! told to and lets in-flight requests finish.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
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

/// Serves `listener` until `stop` turns true.
pub(crate) async fn serve(
    listener: TcpListener,
    state: Arc<AppState>,
    mut stop: watch::Receiver<bool>,
) {
    let routes = warp::service(http::routes(state.clone()));
    let graceful = GracefulShutdown::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.wait_for(|stopped| *stopped) => break,
        };
        let stream = match accepted {
            Ok((stream, _peer)) => stream,
            Err(error) => {
                // Out of file descriptors and the like: say so, back off, keep serving.
                tracing::warn!(%error, "cannot accept a connection");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // Frames are batched by the sessions; Nagle would only add latency.
        let _ = stream.set_nodelay(true);
        let state = state.clone();
        let routes = routes.clone();
        let service = hyper::service::service_fn(move |request: Request<Incoming>| {
            let state = state.clone();
            let mut routes = routes.clone();
            async move {
                if request.uri().path() == gateway::PATH {
                    Ok::<_, Infallible>(gateway::upgrade(&state.gateway, request))
                } else {
                    routes.call(request).await
                }
            }
        });
        let connection = auto::Builder::new(TokioExecutor::new())
            .serve_connection_with_upgrades(TokioIo::new(stream), service)
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
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
