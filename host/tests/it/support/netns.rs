//! A network split the test makes and heals: a network namespace joined to
//! the test's own by one veth pair (iproute2). Processes started in the
//! namespace reach the other side through the pair; taking the pair down
//! cuts them off silently, as a real partition does (no resets, packets
//! just stop), and bringing it up heals it.

use std::process::Command;

fn ip(args: &[&str]) {
    let output = Command::new("ip").args(args).output().expect("run ip (iproute2)");
    assert!(
        output.status.success(),
        "ip {}: {} (network namespaces need root and iproute2)",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
}

pub struct Split {
    /// The namespace's name (for `ip netns exec`).
    pub ns: String,
    /// The address on this side of the pair, and the one inside.
    pub outside: String,
    pub inside: String,
    veth: String,
}

impl Split {
    /// A fresh namespace and pair, named after this process and `tag`.
    pub fn new(tag: u8) -> Split {
        let id = std::process::id() % 10_000;
        let net = (std::process::id() % 200) as u8;
        let split = Split {
            ns: format!("mbr{id}{tag}"),
            outside: format!("10.{}.{net}.1", 200 + tag),
            inside: format!("10.{}.{net}.2", 200 + tag),
            veth: format!("mbo{id}{tag}"),
        };
        let peer = format!("mbi{id}{tag}");
        ip(&["netns", "add", &split.ns]);
        ip(&["netns", "exec", &split.ns, "ip", "link", "set", "lo", "up"]);
        ip(&["link", "add", &split.veth, "type", "veth", "peer", "name", &peer]);
        ip(&["link", "set", &peer, "netns", &split.ns]);
        ip(&["addr", "add", &format!("{}/30", split.outside), "dev", &split.veth]);
        ip(&["link", "set", &split.veth, "up"]);
        ip(&[
            "netns",
            "exec",
            &split.ns,
            "ip",
            "addr",
            "add",
            &format!("{}/30", split.inside),
            "dev",
            &peer,
        ]);
        ip(&["netns", "exec", &split.ns, "ip", "link", "set", &peer, "up"]);
        split
    }

    /// Cuts the namespace off. With the pair down, this side would send
    /// what it still has for the inside address out of its default route,
    /// where the machine's network may answer it (a connect completes);
    /// a blackhole route drops it instead, as a real partition does.
    pub fn cut(&self) {
        ip(&["link", "set", &self.veth, "down"]);
        ip(&["route", "add", "blackhole", &format!("{}/32", self.inside)]);
    }

    /// Joins it again.
    pub fn heal(&self) {
        ip(&["link", "set", &self.veth, "up"]);
        ip(&["route", "del", "blackhole", &format!("{}/32", self.inside)]);
    }

    /// Runs `program args` inside the namespace; its output.
    pub fn run(&self, program: &str, args: &[&str]) -> std::process::Output {
        Command::new("ip")
            .args(["netns", "exec", &self.ns, program])
            .args(args)
            .output()
            .expect("run in the namespace")
    }
}

impl Split {
    /// `version` from `versioned` at `addr` inside the namespace (curl).
    pub fn version(&self, addr: std::net::SocketAddr) -> Option<u64> {
        let out = self.run("curl", &["-s", "--max-time", "10", &format!("http://{addr}/")]);
        serde_json::from_slice::<serde_json::Value>(&out.stdout).ok()?["version"].as_u64()
    }
}

impl Drop for Split {
    fn drop(&mut self) {
        let blackhole = format!("{}/32", self.inside);
        let _ = Command::new("ip")
            .args(["route", "del", "blackhole", &blackhole])
            .output();
        let _ = Command::new("ip").args(["link", "del", &self.veth]).output();
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).output();
    }
}
