//! A short real run of the generator against the real server (in process, port 0, in-memory
//! adapters): every message must reach every subscriber of its room, once, in open mode
//! and in jwt mode (each connection with its own token). Speed is not asserted; each run
//! takes about three seconds.

use chat_bench::{BenchArgs, BenchError, LoadReport, run_load};
use chat_server::{Adapters, Application, AuthMode, Settings, ShutdownHandle};
use clap::Parser;

const SECRET: &str = "a-bench-smoke-secret-that-is-long-enough-for-hs256";

/// The embedded server on a free port: its WebSocket URL, its stop switch and its task.
async fn start_server(
    configure: impl FnOnce(&mut Settings),
) -> (String, ShutdownHandle, tokio::task::JoinHandle<()>) {
    let mut settings = Settings::embedded("127.0.0.1:0".parse().unwrap());
    // A load generator: the rate limits are off, as scripts/bench runs them.
    settings.send_rate = 0;
    settings.room_create_rate = 0;
    configure(&mut settings);
    let app = Application::build_with(settings, Adapters::in_memory())
        .await
        .expect("the embedded server starts");
    let url = format!("ws://{}/ws", app.local_addr());
    let shutdown = app.shutdown_handle();
    let server = tokio::spawn(app.run_until_stopped());
    (url, shutdown, server)
}

/// 12 subscribers and 3 publishers in 3 rooms at 300 msg/s for 0.5 + 1.5 s, plus `extra`.
fn short_run(url: &str, extra: &[&str]) -> BenchArgs {
    let pid = std::process::id().to_string();
    let mut args = vec![
        "chat-bench",
        "--url",
        url,
        "--subscribers",
        "12",
        "--publishers",
        "3",
        "--rooms",
        "3",
        "--rate",
        "300",
        "--size",
        "64",
        "--warmup",
        "0.5",
        "--duration",
        "1.5",
        "--drain",
        "2",
        "--progress",
        "0",
        "--watch-pid",
        &pid,
    ];
    args.extend_from_slice(extra);
    BenchArgs::try_parse_from(args).unwrap()
}

/// Every message reached every subscriber of its room once, and nothing was refused.
fn assert_complete(report: &LoadReport) {
    assert_eq!(report.connect_failures, 0, "{report}");
    assert_eq!(report.unsent, 0, "{report}");
    assert!(report.sent >= 500, "about 600 messages were due: {report}");
    // 4 subscribers per room.
    assert_eq!(report.deliveries.expected, report.sent * 4, "{report}");
    assert_eq!(report.deliveries.lost, 0, "{report}");
    assert_eq!(
        report.deliveries.delivered, report.deliveries.expected,
        "{report}"
    );
    assert_eq!(report.deliveries.duplicates, 0, "{report}");
    assert_eq!(
        report.deliveries.misrouted + report.deliveries.unparsable + report.errors,
        0,
        "{report}"
    );
    assert!(report.latency.count > 0, "{report}");
    assert!(report.cpu_us_per_delivery.is_some(), "{report}");
    assert!(
        report.connect_secs > 0.0 && report.connects_per_sec > 0.0,
        "{report}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_paced_run_against_the_embedded_server_delivers_every_message_once() {
    let (url, shutdown, server) = start_server(|_| {}).await;

    let report = run_load(&short_run(&url, &[]))
        .await
        .expect("the run completes");
    assert_complete(&report);
    assert!(!report.jwt, "{report}");

    shutdown.trigger();
    let _ = server.await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_jwt_secret_every_connection_is_accepted_by_a_server_in_jwt_mode() {
    let (url, shutdown, server) = start_server(|settings| {
        settings.auth = Some(AuthMode::Jwt);
        settings.jwt_secret = Some(SECRET.to_owned());
    })
    .await;

    // Without tokens the server refuses already the room creation (401).
    let refused = run_load(&short_run(&url, &[])).await;
    assert!(
        matches!(refused, Err(BenchError::CreateRoom { ref reason, .. }) if reason.contains("401")),
        "{refused:?}"
    );

    // With them, publishers send as their token's user (no SENDER_MISMATCH: errors is 0).
    let report = run_load(&short_run(&url, &["--jwt-secret", SECRET]))
        .await
        .expect("the run completes");
    assert_complete(&report);
    assert!(report.jwt, "{report}");

    shutdown.trigger();
    let _ = server.await;
}
