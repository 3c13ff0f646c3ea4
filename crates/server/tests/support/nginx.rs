//! A real nginx in front of `chat-server` processes, configured from the same template as
//! `scripts/run-lb` (deploy/nginx/load-balancer.conf.template), on a free loopback port with
//! its configuration, pid file and logs in a directory of its own. Killed when dropped.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};

const TEMPLATE: &str = include_str!("../../../../deploy/nginx/load-balancer.conf.template");

pub struct LoadBalancer {
    child: Child,
    runtime: PathBuf,
    pub addr: SocketAddr,
}

impl LoadBalancer {
    /// Starts nginx balancing round-robin over `replicas` and waits until it accepts
    /// connections. Panics, saying what to install, when nginx is missing.
    pub async fn start(replicas: &[SocketAddr]) -> Self {
        let nginx = find_nginx().unwrap_or_else(|| {
            panic!(
                "nginx is not installed, and this test needs a real one in front of the chat-server \
                 processes: install the Debian package (`apt-get install nginx`; .ci/run does)"
            )
        });
        let runtime = std::env::temp_dir().join(format!(
            "chat-lb-test-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        std::fs::create_dir_all(&runtime).unwrap();
        let addr = free_loopback_port();
        let servers = replicas
            .iter()
            .map(|replica| format!("        server {replica} max_fails=1 fail_timeout=5s;"))
            .collect::<Vec<_>>()
            .join("\n");
        let config = TEMPLATE
            .replace("@RUNTIME_DIR@", runtime.to_str().unwrap())
            .replace("@LISTEN@", &addr.to_string())
            .replace("@UPSTREAM_SERVERS@", &servers);
        let config_path = runtime.join("nginx.conf");
        std::fs::write(&config_path, config).unwrap();

        // `master_process off`: one process, so killing it on drop leaves no orphaned worker
        // holding the port. The configuration is otherwise the one scripts/run-lb uses.
        let child = Command::new(nginx)
            .arg("-p")
            .arg(&runtime)
            .arg("-c")
            .arg(&config_path)
            .arg("-e")
            .arg(runtime.join("error.log"))
            .args(["-g", "daemon off; master_process off;"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("nginx starts");
        let mut balancer = Self {
            child,
            runtime,
            addr,
        };
        balancer.wait_until_listening().await;
        balancer
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    pub fn http(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    async fn wait_until_listening(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if tokio::net::TcpStream::connect(self.addr).await.is_ok() {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "nginx exited with {status} before listening on {}; its error log:\n{}",
                    self.addr,
                    read_log(&self.runtime)
                );
            }
            assert!(
                Instant::now() < deadline,
                "nginx does not listen on {} after 10 s; its error log:\n{}",
                self.addr,
                read_log(&self.runtime)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for LoadBalancer {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        let _ = std::fs::remove_dir_all(&self.runtime);
    }
}

fn find_nginx() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin")])
        .map(|dir| dir.join("nginx"))
        .find(|candidate| candidate.is_file())
}

/// A loopback port that was free a moment ago (nginx binds it itself right after).
fn free_loopback_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

fn read_log(runtime: &Path) -> String {
    std::fs::read_to_string(runtime.join("error.log")).unwrap_or_default()
}
