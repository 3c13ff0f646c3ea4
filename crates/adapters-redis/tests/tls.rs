//! `rediss://` against a real TLS `redis-server` with a certificate from a throw-away CA:
//! an untrusted certificate fails start-up as a TLS error, and once the CA is trusted
//! (`SSL_CERT_FILE`, read by the system trust store loader) the bus works over TLS.

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use chat_adapters_redis::{RedisBus, RedisError};
use chat_domain::MessageBus;
use common::{config, message, next_message};
use tokio::process::{Child, Command};

/// Set in the child process that runs with the throw-away CA trusted.
const CHILD_URL_VAR: &str = "CHAT_TEST_TLS_CHILD_URL";

/// A TLS-only `redis-server` on a free port, killed on drop, and its CA certificate.
struct TlsRedis {
    port: u16,
    ca_file: PathBuf,
    dir: PathBuf,
    _process: Child,
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn openssl(dir: &Path, args: &[&str]) {
    let status = std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("the openssl command line tool is needed for the TLS test");
    assert!(status.success(), "openssl {args:?} failed");
}

async fn start_tls_redis() -> TlsRedis {
    let dir = std::env::temp_dir().join(chat_test_support::redis::unique_channel("chat-tls"));
    std::fs::create_dir_all(&dir).unwrap();
    openssl(
        &dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "1",
            "-subj",
            "/CN=chat-test-ca",
        ],
    );
    openssl(
        &dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=localhost",
        ],
    );
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
    )
    .unwrap();
    openssl(
        &dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "1",
            "-extfile",
            "ext.cnf",
        ],
    );

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let process = Command::new("redis-server")
        .current_dir(&dir)
        .args([
            "--port",
            "0",
            "--tls-port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
        ])
        .args([
            "--tls-cert-file",
            "server.pem",
            "--tls-key-file",
            "server.key",
        ])
        .args(["--tls-ca-cert-file", "ca.pem", "--tls-auth-clients", "no"])
        .args(["--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("redis-server is needed for the TLS test");
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return TlsRedis {
                port,
                ca_file: dir.join("ca.pem"),
                dir,
                _process: process,
            };
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the TLS redis-server did not start on port {port}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_server_certificate_fails_start_up_as_a_tls_error() {
    if std::env::var_os(CHILD_URL_VAR).is_some() {
        return; // Only the trusted-CA test runs in the child.
    }
    let redis = start_tls_redis().await;
    let url = format!("rediss://localhost:{}", redis.port);
    match RedisBus::connect(config(&url, "tls-untrusted")).await {
        Err(RedisError::Tls(why)) => assert!(why.contains("certificate"), "{why}"),
        other => panic!("expected a TLS error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_ca_trusted_the_bus_publishes_and_receives_over_tls() {
    if let Ok(url) = std::env::var(CHILD_URL_VAR) {
        // The child: SSL_CERT_FILE makes the throw-away CA the trust store.
        let bus = RedisBus::connect(config(&url, "tls"))
            .await
            .expect("TLS connect");
        let mut events = bus.subscribe().await.unwrap();
        bus.publish(&message(1, 1)).await.unwrap();
        assert_eq!(
            next_message(&mut events, "a message over TLS").await,
            message(1, 1)
        );
        bus.check_health().await.unwrap();
        bus.shutdown().await;
        return;
    }
    // The trust store is read from the environment, which a test cannot change for itself
    // (set_var is unsafe); so this test runs itself again in a child process.
    let redis = start_tls_redis().await;
    let output = Command::new(std::env::current_exe().unwrap())
        .args([
            "with_the_ca_trusted_the_bus_publishes_and_receives_over_tls",
            "--exact",
            "--nocapture",
        ])
        .env(CHILD_URL_VAR, format!("rediss://localhost:{}", redis.port))
        .env("SSL_CERT_FILE", &redis.ca_file)
        .output()
        .await
        .unwrap();
    let out = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && out.contains("1 passed"),
        "child failed:\n{out}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
