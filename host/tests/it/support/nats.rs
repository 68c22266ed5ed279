//! A private `nats-server` per test: JetStream on, a random port, a temp store
//! dir. It can be killed and restarted on the same port and store to test
//! broker faults.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::channel;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// `MEMBRANE_NATS_SERVER` when set (a current server: scripts/test.sh runs
/// the NATS modules again on one), else where Debian's package puts it;
/// `scripts/test.sh` installs both.
fn binary() -> PathBuf {
    if let Some(path) = std::env::var_os("MEMBRANE_NATS_SERVER") {
        return PathBuf::from(path);
    }
    [
        "/usr/sbin/nats-server",
        "/usr/bin/nats-server",
        "/usr/local/bin/nats-server",
    ]
    .into_iter()
    .map(PathBuf::from)
    .find(|p| p.exists())
    .expect("nats-server not found: run scripts/test.sh, which installs it")
}

/// The version of the nats-server the tests run, as (major, minor).
pub fn server_version() -> (u32, u32) {
    let output = std::process::Command::new(binary())
        .arg("--version")
        .output()
        .expect("run nats-server --version");
    // "nats-server: v2.9.10"
    let text = String::from_utf8_lossy(&output.stdout).to_string();
    let mut numbers = text
        .rsplit('v')
        .next()
        .unwrap_or_default()
        .trim()
        .split('.')
        .map(|n| n.parse::<u32>().unwrap_or(0));
    (numbers.next().unwrap_or(0), numbers.next().unwrap_or(0))
}

pub struct NatsServer {
    child: Option<Child>,
    pub port: u16,
    store: tempfile::TempDir,
    extra: Vec<String>,
    env: Vec<(String, String)>,
    jetstream: bool,
    /// The address it listens on, and the network namespace it runs in.
    addr: String,
    netns: Option<String>,
    /// The last lines it logged (across restarts), for failure messages.
    log: Arc<Mutex<std::collections::VecDeque<String>>>,
}

impl NatsServer {
    /// Starts a server on a random port.
    pub fn start() -> NatsServer {
        NatsServer::start_with(&[])
    }

    /// Starts a server with extra command-line options (e.g. `--auth TOKEN`).
    pub fn start_with(extra: &[&str]) -> NatsServer {
        NatsServer::start_with_env(extra, &[])
    }

    /// Starts a server with extra options and environment variables (which
    /// a config file can name, e.g. `password: $PASSWORD`).
    pub fn start_with_env(extra: &[&str], env: &[(&str, &str)]) -> NatsServer {
        NatsServer::launched(extra, env, true, "127.0.0.1", None)
    }

    /// Starts a server without JetStream (a leaf node that uses its hub's).
    pub fn start_without_jetstream(extra: &[&str]) -> NatsServer {
        NatsServer::launched(extra, &[], false, "127.0.0.1", None)
    }

    /// Starts a server without JetStream on `addr` inside network namespace
    /// `netns` (a leaf node at the edge).
    pub fn start_leaf_in(netns: &str, addr: &str, extra: &[&str]) -> NatsServer {
        NatsServer::launched(extra, &[], false, addr, Some(netns))
    }

    /// Starts a server listening on `addr`, inside network namespace
    /// `netns` when given, with `extra` options.
    pub fn start_at(addr: &str, netns: Option<&str>, extra: &[&str]) -> NatsServer {
        NatsServer::launched(extra, &[], true, addr, netns)
    }

    fn launched(extra: &[&str], env: &[(&str, &str)], jetstream: bool, addr: &str, netns: Option<&str>) -> NatsServer {
        let mut server = NatsServer {
            child: None,
            port: 0,
            store: tempfile::tempdir().expect("store dir"),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            jetstream,
            addr: addr.into(),
            netns: netns.map(String::from),
            log: Arc::default(),
        };
        let (child, port) = server.launch(-1);
        server.child = Some(child);
        server.port = port;
        server
    }

    /// The JetStream store directory: every stream's bytes, as the server
    /// keeps them.
    pub fn store_dir(&self) -> &std::path::Path {
        self.store.path()
    }

    pub fn url(&self) -> String {
        format!("nats://{}:{}", self.addr, self.port)
    }

    /// Kills the server (SIGKILL: no goodbye to clients).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port with the same store.
    pub fn restart(&mut self) {
        self.kill();
        let (child, _) = self.launch(i32::from(self.port));
        self.child = Some(child);
    }

    fn launch(&self, port: i32) -> (Child, u16) {
        let mut command = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(binary());
                c
            }
            None => Command::new(binary()),
        };
        if self.jetstream {
            command.arg("-js").arg("-sd").arg(self.store.path());
        }
        command
            .args(["-a", &self.addr, "-p", &port.to_string()])
            .args(&self.extra);
        command.envs(self.env.iter().map(|(k, v)| (k, v)));
        wait_ready(command, self.log.clone())
    }

    /// The last lines it logged, to put in a failure message.
    pub fn log_tail(&self) -> String {
        let log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        log.iter()
            .map(|line| format!("  [nats {}] {line}\n", self.addr))
            .collect()
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Spawns `command` (a nats-server) and waits for its "ready" log line;
/// returns the port. Its last lines are kept in `log`.
fn wait_ready(mut command: Command, log: Arc<Mutex<std::collections::VecDeque<String>>>) -> (Child, u16) {
    let mut child = command
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start nats-server");
    let stderr = child.stderr.take().expect("piped");
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        let mut port = None;
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(rest) = line.split("Listening for client connections on ").nth(1) {
                port = rest.rsplit(':').next().and_then(|p| p.trim().parse::<u16>().ok());
            }
            if line.contains("Server is ready") {
                let _ = tx.send(port);
            }
            if std::env::var_os("MEMBRANE_TEST_NATS_LOG").is_some() {
                eprintln!("  [nats-server] {line}");
            }
            let mut log = log.lock().unwrap_or_else(|e| e.into_inner());
            if log.len() == 100 {
                log.pop_front();
            }
            log.push_back(line);
        }
    });
    let port = rx
        .recv_timeout(Duration::from_secs(20))
        .ok()
        .flatten()
        .expect("nats-server did not become ready");
    (child, port)
}

/// A NATS client over a plain socket, speaking the protocol by hand, so that
/// a test can send what a well-behaved library refuses to (malformed
/// headers, absurd sizes).
pub struct RawNats {
    stream: std::net::TcpStream,
    reader: BufReader<std::net::TcpStream>,
}

impl RawNats {
    /// Connects to `server` and completes the handshake (headers on).
    pub fn connect(server: &NatsServer) -> RawNats {
        RawNats::connect_with(server, "")
    }

    /// [`RawNats::connect`] as `user` with `password`.
    pub fn connect_as(server: &NatsServer, user: &str, password: &str) -> RawNats {
        RawNats::connect_with(server, &format!(",\"user\":{user:?},\"pass\":{password:?}"))
    }

    fn connect_with(server: &NatsServer, credentials: &str) -> RawNats {
        use std::io::Write as _;
        let stream = std::net::TcpStream::connect(("127.0.0.1", server.port)).expect("connect to nats-server");
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut raw = RawNats {
            reader: BufReader::new(stream.try_clone().unwrap()),
            stream,
        };
        raw.stream
            .write_all(
                format!(
                    "CONNECT {{\"verbose\":false,\"pedantic\":false,\"headers\":true,\"protocol\":1{credentials}}}\r\n"
                )
                .as_bytes(),
            )
            .unwrap();
        raw.ping();
        raw
    }

    /// Round-trips a PING: everything sent before has been processed.
    pub fn ping(&mut self) {
        use std::io::Write as _;
        self.stream.write_all(b"PING\r\n").unwrap();
        loop {
            let mut line = String::new();
            self.reader.read_line(&mut line).expect("a line from nats-server");
            assert!(!line.starts_with("-ERR"), "nats-server refused: {line}");
            if line.starts_with("PONG") {
                return;
            }
        }
    }

    /// Publishes `payload` to `subject` with `headers` as the raw header
    /// block (it must start with `NATS/1.0\r\n` and end with `\r\n\r\n`).
    pub fn hpub(&mut self, subject: &str, headers: &[u8], payload: &[u8]) {
        self.hpub_reply(subject, None, headers, payload);
    }

    /// [`RawNats::hpub`] with a reply subject.
    pub fn hpub_reply(&mut self, subject: &str, reply: Option<&str>, headers: &[u8], payload: &[u8]) {
        use std::io::Write as _;
        let reply = reply.map(|r| format!("{r} ")).unwrap_or_default();
        let head = format!(
            "HPUB {subject} {reply}{} {}\r\n",
            headers.len(),
            headers.len() + payload.len()
        );
        let mut frame = head.into_bytes();
        frame.extend_from_slice(headers);
        frame.extend_from_slice(payload);
        frame.extend_from_slice(b"\r\n");
        self.stream.write_all(&frame).unwrap();
        self.ping();
    }
}

/// A free loopback port (bound, then let go: a route port must be known
/// before the servers that dial it start).
pub fn free_port() -> u16 {
    free_ports(1)[0]
}

/// `n` different free loopback ports (all bound at once, then let go).
pub fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<std::net::TcpListener> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("a free port"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("its address").port())
        .collect()
}

/// `n` nats-servers clustered by routes on loopback, JetStream on each
/// (server names `s0`, `s1`, ...), each with its own store. Servers can be
/// killed and restarted one by one.
pub struct NatsCluster {
    pub servers: Vec<NatsServer>,
}

impl NatsCluster {
    /// Starts the cluster and waits until its JetStream has a leader.
    pub fn start(n: usize) -> NatsCluster {
        let routes = free_ports(n);
        let all = routes
            .iter()
            .map(|p| format!("nats://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",");
        let servers = (0..n)
            .map(|i| {
                let name = format!("s{i}");
                let cluster = format!("nats://127.0.0.1:{}", routes[i]);
                NatsServer::start_with(&[
                    "-n",
                    &name,
                    "--cluster_name",
                    "membrane",
                    "--cluster",
                    &cluster,
                    "--routes",
                    &all,
                ])
            })
            .collect();
        let cluster = NatsCluster { servers };
        wait_for_jetstream(&cluster.urls());
        cluster
    }

    /// Every server's client URL, comma-separated.
    pub fn urls(&self) -> String {
        self.servers.iter().map(NatsServer::url).collect::<Vec<_>>().join(",")
    }
}

/// Waits (up to 30 s) until a JetStream API request through `urls`
/// gets an answer with no error: the cluster has a metadata leader.
pub fn wait_for_jetstream(urls: &str) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = connect_any(urls).await;
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let answer = tokio::time::timeout(
                Duration::from_secs(2),
                client.request("$JS.API.STREAM.NAMES", "{}".into()),
            )
            .await;
            if let Ok(Ok(message)) = answer
                && serde_json::from_slice::<serde_json::Value>(&message.payload).is_ok_and(|v| v.get("error").is_none())
            {
                return;
            }
            assert!(std::time::Instant::now() < deadline, "no JetStream leader in 30 s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
}

/// A client of any of `urls` (comma-separated), failing over between them.
pub async fn connect_any(urls: &str) -> async_nats::Client {
    let addrs: Vec<async_nats::ServerAddr> = urls.split(',').map(|u| u.parse().expect("a NATS URL")).collect();
    async_nats::connect(addrs).await.expect("connect to NATS")
}
