//! The real `curl`, as a user runs it against a host.

use std::process::Command;

/// What curl saw.
pub struct Reply {
    pub status: u16,
    /// `1.1` or `2`.
    pub version: String,
    pub headers: String,
    pub body: Vec<u8>,
}

impl Reply {
    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
}

/// Runs the real `curl` with `args` and returns the response.
pub fn curl(args: &[&str]) -> Reply {
    let dir = tempfile::tempdir().expect("temp dir");
    let (head, body) = (dir.path().join("head"), dir.path().join("body"));
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "60", "-D"])
        .arg(&head)
        .arg("-o")
        .arg(&body)
        .args(["-w", "%{http_code} %{http_version}"])
        .args(args)
        .output()
        .expect("curl is installed (the tests use the real client)");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "curl {args:?} failed: {stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (status, version) = stdout.split_once(' ').expect("curl's -w line");
    Reply {
        status: status.parse().expect("status"),
        version: version.to_string(),
        headers: std::fs::read_to_string(head).unwrap_or_default(),
        body: std::fs::read(body).unwrap_or_default(),
    }
}
