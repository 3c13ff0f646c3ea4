//! A short real run of the generator against the real server (in process, port 0, in-memory
//! adapters): every message must reach every subscriber of its room, once. Speed is not
//! asserted; the run takes about three seconds.

use chat_bench::{BenchArgs, run_load};
use chat_server::{Adapters, Application, Settings};
use clap::Parser;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_paced_run_against_the_embedded_server_delivers_every_message_once() {
    let app = Application::build_with(
        Settings::embedded("127.0.0.1:0".parse().unwrap()),
        Adapters::in_memory(),
    )
    .await
    .expect("the embedded server starts");
    let url = format!("ws://{}/ws", app.local_addr());
    let shutdown = app.shutdown_handle();
    let server = tokio::spawn(app.run_until_stopped());

    let args = BenchArgs::try_parse_from([
        "chat-bench",
        "--url",
        &url,
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
        &std::process::id().to_string(),
    ])
    .unwrap();
    let report = run_load(&args).await.expect("the run completes");

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

    shutdown.trigger();
    let _ = server.await;
}
