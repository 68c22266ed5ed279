//! A private `nats-server` per test: JetStream on, a random port, a temp store
//! dir. It can be killed and restarted on the same port and store to test
//! broker faults.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::channel;
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

pub struct NatsServer {
    child: Child,
    pub port: u16,
    store: tempfile::TempDir,
    extra: Vec<String>,
    env: Vec<(String, String)>,
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
        let store = tempfile::tempdir().expect("store dir");
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        let env: Vec<(String, String)> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let (child, port) = launch(-1, &store.path().to_path_buf(), &extra, &env);
        NatsServer {
            child,
            port,
            store,
            extra,
            env,
        }
    }

    /// The JetStream store directory: every stream's bytes, as the server
    /// keeps them.
    pub fn store_dir(&self) -> &std::path::Path {
        self.store.path()
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Kills the server (SIGKILL: no goodbye to clients).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts it again on the same port with the same store.
    pub fn restart(&mut self) {
        self.kill();
        let (child, _) = launch(
            i32::from(self.port),
            &self.store.path().to_path_buf(),
            &self.extra,
            &self.env,
        );
        self.child = child;
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Starts `nats-server` and waits for its "ready" log line; returns the port.
fn launch(port: i32, store: &PathBuf, extra: &[String], env: &[(String, String)]) -> (Child, u16) {
    let mut child = Command::new(binary())
        .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
        .arg(store)
        .args(extra)
        .envs(env.iter().map(|(k, v)| (k, v)))
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
