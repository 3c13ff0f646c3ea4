//! PostgreSQL fixtures: [`fresh_database`] gives each test its own database on a shared
//! server (CI's `CHAT_TEST_DATABASE_URL`, else a testcontainers PostgreSQL 17, else a clear
//! failure) and drops it afterwards; [`ThrowawayPostgres`] is a private cluster
//! (`initdb` + `pg_ctl`) a test may stop and start again to exercise outages.

use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use testcontainers_modules::postgres::Postgres;
use testcontainers_modules::testcontainers::runners::AsyncRunner;
use testcontainers_modules::testcontainers::{ContainerAsync, ImageExt};
use tokio::process::Command;

/// The variable CI sets to a running server whose user may create databases, e.g.
/// `postgres://postgres@127.0.0.1:5432/postgres`.
pub const DATABASE_URL_VAR: &str = "CHAT_TEST_DATABASE_URL";
/// The module's default image is PostgreSQL 11; the product supports 16 and 17.
const POSTGRES_IMAGE_TAG: &str = "17-alpine";

/// A database of one test alone. Keep it alive for the whole test: dropping it drops the
/// database (closing whatever connections still use it) and stops the container, if any.
pub struct TestDatabase {
    url: String,
    admin_url: String,
    name: String,
    // Declared last: dropped after the database is gone.
    _container: Option<ContainerAsync<Postgres>>,
}

impl TestDatabase {
    /// The URL of this test's database.
    #[must_use]
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The URL of the server's maintenance database, for tests that need to look around.
    #[must_use]
    pub fn admin_url(&self) -> &str {
        &self.admin_url
    }

    /// The database's name (`chat_test_…`).
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        // Drop cannot await, and the test's runtime may be shutting down: a thread with its
        // own runtime does the work, and joining it means the database is gone when the
        // test ends, so a run leaves nothing behind.
        let admin_url = self.admin_url.clone();
        let name = self.name.clone();
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime to drop the test database");
            runtime.block_on(drop_database(&admin_url, &name))
        })
        .join();
        match dropped {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("warning: could not drop test database {}: {e}", self.name),
            Err(_) => eprintln!("warning: dropping test database {} panicked", self.name),
        }
    }
}

/// A new, empty database for one test, on `CHAT_TEST_DATABASE_URL` when set, otherwise in
/// a PostgreSQL 17 container.
///
/// # Panics
/// When neither is available, with a message saying what to set. Tests never skip silently.
pub async fn fresh_database() -> TestDatabase {
    let (admin_url, container) = match std::env::var(DATABASE_URL_VAR) {
        Ok(url) if !url.trim().is_empty() => (url, None),
        _ => {
            let container = start_container().await;
            let host = container.get_host().await.expect("container host");
            let port = container
                .get_host_port_ipv4(5432)
                .await
                .expect("container port 5432");
            (
                format!("postgres://postgres:postgres@{host}:{port}/postgres"),
                Some(container),
            )
        }
    };
    let name = unique_database_name();
    create_database(&admin_url, &name)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "cannot create test database {name} through {DATABASE_URL_VAR} \
             (the user needs CREATEDB): {e}"
            )
        });
    TestDatabase {
        url: with_database(&admin_url, &name),
        admin_url,
        name,
        _container: container,
    }
}

async fn start_container() -> ContainerAsync<Postgres> {
    match Postgres::default()
        .with_tag(POSTGRES_IMAGE_TAG)
        .start()
        .await
    {
        Ok(container) => container,
        Err(e) => panic!(
            "no PostgreSQL for integration tests: {DATABASE_URL_VAR} is not set and a \
             PostgreSQL container could not be started ({e}). Set \
             {DATABASE_URL_VAR}=postgres://postgres@127.0.0.1:5432/postgres (a local server \
             whose user may create databases) or start Docker."
        ),
    }
}

/// `chat_test_{pid}_{time}_{n}`: unique across parallel tests and concurrent runs.
fn unique_database_name() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() % 1_000_000_000_000);
    format!(
        "chat_test_{}_{nanos}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// `url` with its database replaced by `database` (URL or key=value form).
#[must_use]
pub fn with_database(url: &str, database: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return format!("{url} dbname={database}");
    };
    let (base, query) = match url.find('?') {
        Some(q) => url.split_at(q),
        None => (url, ""),
    };
    let authority_start = scheme_end + 3;
    let path_start = base[authority_start..]
        .find('/')
        .map_or(base.len(), |p| authority_start + p);
    format!("{}/{database}{query}", &base[..path_start])
}

/// A plain connection to `admin_url`, for creating databases or looking around in a test.
///
/// # Errors
/// When the server cannot be reached or refuses the connection.
pub async fn admin_client(
    admin_url: &str,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::connect(admin_url, tokio_postgres::NoTls).await?;
    tokio::spawn(async move {
        // Ends when the client is dropped; an error here surfaces on the client's calls.
        let _ = connection.await;
    });
    Ok(client)
}

async fn create_database(admin_url: &str, name: &str) -> Result<(), tokio_postgres::Error> {
    let client = admin_client(admin_url).await?;
    // Names are ours (letters, digits, '_'), so quoting is enough; DDL takes no parameters.
    client
        .batch_execute(&format!("CREATE DATABASE \"{name}\""))
        .await
}

async fn drop_database(admin_url: &str, name: &str) -> Result<(), tokio_postgres::Error> {
    let client = admin_client(admin_url).await?;
    // FORCE (PostgreSQL 13+) ends the sessions a repository pool may still hold.
    client
        .batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
        .await
}

/// A PostgreSQL cluster of this test alone: `initdb` into a temporary directory, started
/// with `pg_ctl` on a free port of 127.0.0.1 with trust authentication. The test may stop
/// it and start it again (same port, same data). Dropping it stops the server and deletes
/// the directory.
///
/// The binaries are taken from `CHAT_TEST_PG_BIN` when set, else the newest
/// `/usr/lib/postgresql/*/bin`. PostgreSQL refuses to run as root, so under root the
/// commands run as the `postgres` user through `runuser`.
pub struct ThrowawayPostgres {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
    run_as_postgres: bool,
}

impl ThrowawayPostgres {
    const START_TIMEOUT: Duration = Duration::from_secs(30);

    /// Creates the cluster and starts it.
    ///
    /// # Panics
    /// When the binaries are missing or the cluster does not come up; the message carries
    /// the tool's output.
    pub async fn start() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let bin = postgres_bin_dir();
        let dir = std::env::temp_dir().join(format!(
            "chat-throwaway-pg-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create the throw-away cluster directory");
        let run_as_postgres = running_as_root();
        let cluster = Self {
            bin,
            dir,
            port: free_port(),
            run_as_postgres,
        };
        if run_as_postgres {
            cluster
                .run_checked(
                    Command::new("chown")
                        .arg("postgres:postgres")
                        .arg(&cluster.dir),
                )
                .await;
        }
        let data = cluster.data_dir();
        let mut initdb = cluster.pg_command("initdb");
        initdb
            .arg("-D")
            .arg(&data)
            .args(["--username=postgres", "--auth=trust", "--encoding=UTF8"])
            .args(["--no-locale", "--no-sync"]);
        cluster.run_checked(&mut initdb).await;
        cluster.start_again().await;
        cluster
    }

    /// `postgres://postgres@127.0.0.1:{port}/postgres`.
    #[must_use]
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    #[must_use]
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stops the server (fast shutdown: sessions are ended, as in a failover or restart)
    /// and waits until it is down. The data stays.
    ///
    /// # Panics
    /// When `pg_ctl stop` fails.
    pub async fn stop(&self) {
        let mut stop = self.pg_command("pg_ctl");
        stop.arg("-D")
            .arg(self.data_dir())
            .args(["-m", "fast", "-w", "stop"]);
        self.run_checked(&mut stop).await;
    }

    /// Starts the server again on the same port with the same data and waits until it
    /// accepts connections.
    ///
    /// # Panics
    /// When it does not come up.
    pub async fn start_again(&self) {
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {} -c fsync=off",
            self.port,
            self.dir.display()
        );
        let mut start = self.pg_command("pg_ctl");
        start
            .arg("-D")
            .arg(self.data_dir())
            .arg("-l")
            .arg(self.dir.join("server.log"))
            .args(["-w", "-t", &Self::START_TIMEOUT.as_secs().to_string()])
            .arg("-o")
            .arg(options)
            .arg("start");
        self.run_checked(&mut start).await;
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        let deadline = tokio::time::Instant::now() + Self::START_TIMEOUT;
        while tokio::net::TcpStream::connect(addr).await.is_err() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the throw-away PostgreSQL did not listen on {addr}; see {}",
                self.dir.join("server.log").display()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn pg_command(&self, tool: &str) -> Command {
        let program = self.bin.join(tool);
        let mut command = if self.run_as_postgres {
            let mut runuser = Command::new("runuser");
            runuser.args(["-u", "postgres", "--"]).arg(program);
            runuser
        } else {
            Command::new(program)
        };
        // pg_ctl's server inherits the working directory; root's may be unreadable to the
        // postgres user.
        command.current_dir(&self.dir);
        command
    }

    async fn run_checked(&self, command: &mut Command) {
        let output = command
            .stdin(Stdio::null())
            .output()
            .await
            .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
        assert!(
            output.status.success(),
            "{command:?} failed ({}):\n{}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

impl Drop for ThrowawayPostgres {
    fn drop(&mut self) {
        // Blocking is fine here: a test is ending. Immediate mode: nothing to keep.
        let program = self.bin.join("pg_ctl");
        let mut stop = if self.run_as_postgres {
            let mut runuser = std::process::Command::new("runuser");
            runuser.args(["-u", "postgres", "--"]).arg(program);
            runuser
        } else {
            std::process::Command::new(program)
        };
        let _ = stop
            .current_dir(&self.dir)
            .arg("-D")
            .arg(self.data_dir())
            .args(["-m", "immediate", "-w", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn postgres_bin_dir() -> PathBuf {
    if let Ok(bin) = std::env::var("CHAT_TEST_PG_BIN")
        && !bin.trim().is_empty()
    {
        return PathBuf::from(bin);
    }
    let root = Path::new("/usr/lib/postgresql");
    let newest = std::fs::read_dir(root).ok().and_then(|entries| {
        entries
            .filter_map(Result::ok)
            .filter_map(|e| {
                let version: u32 = e.file_name().to_str()?.parse().ok()?;
                let bin = e.path().join("bin");
                bin.join("initdb").exists().then_some((version, bin))
            })
            .max_by_key(|(version, _)| *version)
    });
    match newest {
        Some((_, bin)) => bin,
        None => panic!(
            "no PostgreSQL server binaries under {}: install them (apt-get install \
             postgresql) or set CHAT_TEST_PG_BIN to the directory holding initdb and pg_ctl",
            root.display()
        ),
    }
}

/// `/proc/self` belongs to the process's effective user; no `unsafe` `geteuid` needed.
fn running_as_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("no free TCP port on 127.0.0.1")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_database_of_a_url_is_replaced() {
        assert_eq!(
            with_database("postgres://postgres@127.0.0.1:5432/postgres", "t1"),
            "postgres://postgres@127.0.0.1:5432/t1"
        );
        assert_eq!(
            with_database("postgres://u:p@h/db?sslmode=disable", "t1"),
            "postgres://u:p@h/t1?sslmode=disable"
        );
        assert_eq!(
            with_database("postgres://h:5432", "t1"),
            "postgres://h:5432/t1"
        );
        assert_eq!(
            with_database("host=h user=u", "t1"),
            "host=h user=u dbname=t1"
        );
    }
}
