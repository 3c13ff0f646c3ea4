//! The real `chat-server` binary as a child process: started with the given environment,
//! its bound address read from its JSON log, stopped with SIGTERM or killed outright.

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

pub struct ServerProcess {
    child: Child,
    pub addr: SocketAddr,
}

impl ServerProcess {
    /// Starts `chat-server` on a random port with `env` added to the environment, and waits
    /// until it listens. Panics with the server's output if it exits first.
    pub async fn start(env: &[(&str, &str)]) -> Self {
        Self::launch(env, false).await
    }

    /// Like [`start`](Self::start), then closes the read ends of its stdout and stderr, as
    /// `chat-server 2>&1 | head -1` does once `head` has its line: every later log write
    /// fails with a broken pipe.
    pub async fn start_then_break_its_output(env: &[(&str, &str)]) -> Self {
        Self::launch(env, true).await
    }

    async fn launch(env: &[(&str, &str)], break_output: bool) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_chat-server"));
        command
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("CHAT_BIND", "127.0.0.1:0")
            .env("CHAT_LOG_FORMAT", "json")
            .env("RUST_LOG", "info")
            .env("CHAT_SHUTDOWN_GRACE_SECS", "10")
            .env("CHAT_DRAIN_WINDOW_SECS", "1")
            // Open unless a test configures a key (DATABASE_URL alone refuses to start).
            .env("CHAT_AUTH", "none")
            // No rate limits unless a test sets them (see test_settings).
            .env("CHAT_SEND_RATE", "0")
            .env("CHAT_ROOM_CREATE_RATE", "0")
            .stdout(Stdio::piped())
            .stderr(if break_output {
                Stdio::piped()
            } else {
                Stdio::inherit()
            })
            .kill_on_drop(true);
        for (name, value) in env {
            command.env(name, value);
        }
        let mut child = command.spawn().expect("the chat-server binary starts");
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let mut seen = Vec::new();
        let addr = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(line) = lines.next_line().await.unwrap() {
                seen.push(line.clone());
                let Ok(event) = serde_json::from_str::<serde_json::Value>(&line) else {
                    continue;
                };
                if event["message"] == "chat-server listening; STOMP over WebSocket at /ws" {
                    return event["address"].as_str().map(|a| a.parse().unwrap());
                }
            }
            None
        })
        .await
        .ok()
        .flatten()
        .unwrap_or_else(|| {
            panic!(
                "chat-server did not start; its output:\n{}",
                seen.join("\n")
            )
        });
        if break_output {
            drop(lines);
            drop(child.stderr.take());
        } else {
            // Keep draining its output so it never blocks on a full pipe.
            tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        }
        Self { child, addr }
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    pub fn http(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub async fn create_room(&self, name: &str) -> i64 {
        super::create_room_at(&self.http(""), name).await
    }

    pub async fn history(&self, room: i64) -> Vec<serde_json::Value> {
        super::history_at(&self.http(""), room).await
    }

    /// SIGTERM, as Kubernetes sends; returns the exit status.
    pub async fn terminate(self) -> std::process::ExitStatus {
        self.signal("TERM").await
    }

    /// The process id, for a test that signals it from elsewhere (a browser test's script).
    pub fn pid(&self) -> u32 {
        self.child.id().expect("running")
    }

    /// Sends `SIG{name}` and returns at once.
    pub fn send_signal(&self, name: &str) {
        let pid = self.child.id().expect("running").to_string();
        let status = std::process::Command::new("kill")
            .args([&format!("-{name}"), &pid])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Sends `SIG{name}` and waits (30 s at most) for the process to exit.
    pub async fn signal(mut self, name: &str) -> std::process::ExitStatus {
        self.send_signal(name);
        tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("chat-server did not exit within 30 s of SIG{name}"))
            .unwrap()
    }

    /// SIGKILL: a pod that dies without warning.
    pub async fn kill(mut self) {
        self.child.kill().await.unwrap();
    }
}
