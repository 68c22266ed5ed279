//! The `mqtt` medium against a real Mosquitto that the test starts on its
//! own port: a message on the topic calls the export and its result is
//! published on the reply topic, at QoS 0 and 1, to a subscriber speaking
//! MQTT 5 and one speaking 3.1.1; two hosts share the messages instead of
//! each taking every one; a broker restart is survived; a bad filter is
//! refused at load, naming the binding.

use crate::support::{self, Host};
use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A private Mosquitto on a free loopback port, anonymous, in memory.
struct Mosquitto {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Mosquitto {
    fn start() -> Mosquitto {
        let dir = tempfile::tempdir().unwrap();
        Mosquitto::start_on(crate::security::free_port(), dir)
    }

    fn start_on(port: u16, dir: tempfile::TempDir) -> Mosquitto {
        let conf = dir.path().join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!("listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"),
        )
        .unwrap();
        let binary = ["/usr/sbin/mosquitto", "/usr/bin/mosquitto"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .expect("mosquitto not found: run scripts/test.sh, which installs it");
        let child = Command::new(binary)
            .args(["-c", conf.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start mosquitto");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "mosquitto did not listen on {port}");
            std::thread::sleep(Duration::from_millis(20));
        }
        Mosquitto { child, port, dir }
    }

    fn broker(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Stops the broker and starts it again on the same port.
    fn restart(mut self) -> Mosquitto {
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap());
        let port = self.port;
        drop(self);
        Mosquitto::start_on(port, dir)
    }

    /// `mosquitto_pub`: one message.
    fn publish(&self, topic: &str, qos: u8, payload: &str) {
        let status = Command::new("mosquitto_pub")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-V", "mqttv311"])
            .args(["-q", &qos.to_string(), "-t", topic, "-m", payload])
            .status()
            .expect("mosquitto_pub (mosquitto-clients)");
        assert!(status.success());
    }

    /// `mosquitto_sub` on `topic` with MQTT `version`, ready when this
    /// returns (it has its SUBACK).
    fn subscribe(&self, topic: &str, version: &str) -> Subscriber {
        // Line-buffered: piped, mosquitto_sub's stdio would hold its lines.
        let mut child = Command::new("stdbuf")
            .args([
                "-oL",
                "mosquitto_sub",
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-V",
                version,
            ])
            .args(["-q", "1", "-t", topic, "-d"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto_sub (mosquitto-clients)");
        let (tx, lines) = std::sync::mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let subscriber = Subscriber { child, lines };
        subscriber.wait_for(|l| l.contains("SUBACK"));
        subscriber
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Subscriber {
    child: Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Subscriber {
    /// The first line that `matches`, within 20 s.
    fn wait_for(&self, matches: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if matches(&line) => return line,
                Ok(_) => {}
                Err(e) => panic!("no matching line from mosquitto_sub: {e}"),
            }
        }
    }

    /// The payloads received (lines that are not `-d` debug lines) within `wait`.
    fn payloads(&self, wait: Duration) -> Vec<String> {
        let deadline = Instant::now() + wait;
        let mut out = Vec::new();
        while let Ok(line) = self
            .lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            if !line.starts_with("Client ") && !line.starts_with("Subscribed ") {
                out.push(line);
            }
        }
        out
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn app(broker: &str, extra: &str) -> String {
    support::with_paths(&format!(
        r#"
[app]
name = "calc"

[components.adder]
source = "{{wasm:echo}}"

[[bindings]]
medium = "mqtt"
broker = "{broker}"
topic = "calc/add"
reply_topic = "calc/sum"
component = "adder"
export = "example:testkit/echo@0.1.0#add"
{extra}
"#
    ))
}

#[test]
fn a_message_calls_the_export_and_its_result_is_published_at_qos_0_and_1() {
    let broker = Mosquitto::start();
    let host = Host::start(&app(&broker.broker(), "qos = 1"));
    host.wait_for_log("serving mqtt 127.0.0.1:");
    let v5 = broker.subscribe("calc/sum", "mqttv5");
    let v311 = broker.subscribe("calc/sum", "mqttv311");
    broker.publish("calc/add", 1, r#"{"a": 40, "b": 2}"#);
    broker.publish("calc/add", 0, r#"{"a": 1, "b": 2}"#);
    for subscriber in [&v5, &v311] {
        let mut got = subscriber.payloads(Duration::from_secs(3));
        got.sort();
        assert_eq!(got, ["3", "42"]);
    }
    // A payload that does not fit is the caller's fault: logged, acked,
    // and the binding goes on.
    broker.publish("calc/add", 1, r#"{"a": "forty"}"#);
    host.wait_for_log("mqtt calc/add:");
    broker.publish("calc/add", 1, r#"{"a": 5, "b": 5}"#);
    assert_eq!(v5.payloads(Duration::from_secs(2)), ["10"]);
}

#[test]
fn two_hosts_share_the_messages_and_survive_a_broker_restart() {
    let broker = Mosquitto::start();
    let text = app(&broker.broker(), "qos = 1");
    let hosts = [Host::start(&text), Host::start(&text)];
    for host in &hosts {
        host.wait_for_log("serving mqtt");
    }
    let results = broker.subscribe("calc/sum", "mqttv5");
    for i in 0..20 {
        broker.publish("calc/add", 1, &format!(r#"{{"a": {i}, "b": 1000}}"#));
    }
    let mut got: Vec<u64> = results
        .payloads(Duration::from_secs(3))
        .iter()
        .map(|p| p.parse().unwrap())
        .collect();
    got.sort();
    assert_eq!(
        got,
        (1000..1020).collect::<Vec<u64>>(),
        "each message once, not once per host"
    );
    drop(results);

    let broker = broker.restart();
    for host in &hosts {
        host.wait_for_log("connected again");
    }
    let results = broker.subscribe("calc/sum", "mqttv311");
    broker.publish("calc/add", 1, r#"{"a": 2, "b": 2}"#);
    assert_eq!(results.payloads(Duration::from_secs(3)), ["4"]);
}

#[test]
fn a_bad_topic_filter_or_an_unreachable_broker_is_refused_at_load() {
    let text = app("127.0.0.1:1", "").replace("topic = \"calc/add\"", "topic = \"calc/#/add\"");
    let failed = Host::try_start(&text, &support::shared_cache()).err().expect("refused");
    assert!(
        failed
            .stderr
            .contains("bindings[0].topic: \"calc/#/add\" has a `#` that is not the whole last level"),
        "{}",
        failed.stderr
    );
    let port = crate::security::free_port();
    let failed = Host::try_start(&app(&format!("127.0.0.1:{port}"), ""), &support::shared_cache())
        .err()
        .expect("refused");
    assert!(
        failed
            .stderr
            .contains(&format!("bindings[0]: mqtt broker 127.0.0.1:{port}")),
        "{}",
        failed.stderr
    );
}
