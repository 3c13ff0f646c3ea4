//! The binary stops on SIGTERM and SIGINT even when nobody reads its output any more (its
//! stdout and stderr are broken pipes, as after `chat-server 2>&1 | head -1`): logging must
//! never be what keeps a process alive that only SIGKILL could end.

mod support;

use support::process::ServerProcess;

#[tokio::test]
async fn sigterm_stops_the_server_when_its_output_is_a_broken_pipe() {
    let server = ServerProcess::start_then_break_its_output(&[]).await;
    // A request that logs nothing, so the first write to the broken pipes is the
    // signal's own log line.
    let live = reqwest::get(server.http("/health/live")).await.unwrap();
    assert!(live.status().is_success());
    let status = server.signal("TERM").await;
    assert!(status.success(), "exit status {status}");
}

#[tokio::test]
async fn sigint_stops_the_server_when_its_output_is_a_broken_pipe() {
    let server = ServerProcess::start_then_break_its_output(&[]).await;
    let status = server.signal("INT").await;
    assert!(status.success(), "exit status {status}");
}
