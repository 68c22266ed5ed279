//! A private OCI registry per test: Debian's `docker-registry` (CNCF
//! distribution 2.8) on a loopback port with its own storage directory,
//! optionally behind htpasswd basic auth. It can be killed and started
//! again on the same port and storage.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::channel;
use std::time::Duration;

/// Where Debian's package puts the registry; `scripts/test.sh` installs it.
fn binary() -> PathBuf {
    ["/usr/bin/docker-registry", "/usr/local/bin/docker-registry"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .expect("docker-registry not found: run scripts/test.sh, which installs it")
}

pub struct Registry {
    child: Option<Child>,
    pub port: u16,
    dir: tempfile::TempDir,
    auth: bool,
}

impl Registry {
    /// An anonymous registry: anyone may pull and push.
    pub fn start() -> Registry {
        Registry::launch(&[])
    }

    /// A registry that takes only `users` (name, password), by basic auth.
    pub fn with_users(users: &[(&str, &str)]) -> Registry {
        Registry::launch(users)
    }

    fn launch(users: &[(&str, &str)]) -> Registry {
        let dir = tempfile::tempdir().expect("registry dir");
        let mut htpasswd = String::new();
        for (user, password) in users {
            let out = Command::new("htpasswd")
                .args(["-nbB", user, password])
                .output()
                .expect("htpasswd (apache2-utils; scripts/test.sh installs it)");
            assert!(out.status.success(), "htpasswd failed");
            htpasswd.push_str(String::from_utf8_lossy(&out.stdout).trim());
            htpasswd.push('\n');
        }
        // Written before the registry starts: without the file it makes one
        // with a random user of its own.
        std::fs::write(dir.path().join("htpasswd"), htpasswd).expect("write htpasswd");
        let mut registry = Registry {
            child: None,
            port: 0,
            dir,
            auth: !users.is_empty(),
        };
        registry.run();
        registry
    }

    fn run(&mut self) {
        let root = self.dir.path();
        let auth = if self.auth {
            format!(
                "auth:\n  htpasswd:\n    realm: membrane-test\n    path: {}\n",
                root.join("htpasswd").display()
            )
        } else {
            String::new()
        };
        let config = format!(
            "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{}\n  secret: membrane-test\n{auth}",
            root.join("data").display(),
            self.port
        );
        let path = root.join("config.yml");
        std::fs::write(&path, config).expect("write registry config");
        let mut child = Command::new(binary())
            .arg("serve")
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start docker-registry");
        let stderr = child.stderr.take().expect("piped");
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                // It binds, logs the address, then serves from the bound socket.
                if let Some(rest) = line.split("listening on 127.0.0.1:").nth(1) {
                    let port = rest
                        .split(|c: char| !c.is_ascii_digit())
                        .next()
                        .and_then(|p| p.parse().ok());
                    let _ = tx.send(port);
                }
            }
        });
        let port = rx
            .recv_timeout(Duration::from_secs(20))
            .ok()
            .flatten()
            .expect("docker-registry did not start listening");
        self.port = port;
        self.child = Some(child);
    }

    /// `127.0.0.1:PORT`, as references and --insecure-registry name it.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `oci://127.0.0.1:PORT/<path>`.
    pub fn reference(&self, path: &str) -> String {
        format!("oci://{}/{path}", self.host())
    }

    /// Kills the registry (SIGKILL).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port and storage.
    pub fn restart(&mut self) {
        self.kill();
        self.run();
    }

    /// Where the registry keeps the blob `sha256:<hex>` on disk.
    pub fn blob_file(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").expect("a sha256 digest");
        self.dir
            .path()
            .join("data/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    /// The storage directory.
    pub fn storage(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.kill();
    }
}
