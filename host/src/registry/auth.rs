//! Registry credentials, from where Docker and CI keep them, and the
//! `WWW-Authenticate` challenges that say how to use them.
//!
//! Credentials are looked up per registry host, in this order:
//! 1. `MEMBRANE_REGISTRY_AUTH`: whitespace-separated `HOST[:PORT]=USER:PASSWORD`
//!    entries (for CI tokens);
//! 2. Docker's `config.json` (`$DOCKER_CONFIG/config.json`, else
//!    `~/.docker/config.json`): `credHelpers` for the host, then `auths`,
//!    then `credsStore`; a helper is `docker-credential-NAME get`.
//!
//! A password is a [`Secret`]: it has no `Display`, its `Debug` is `***`,
//! and no error message carries it. Credentials go only to the registry
//! they were stored for (see `client.rs` for where a token realm may be).

use base64::Engine as _;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// The environment variable with CI credentials.
pub const ENV: &str = "MEMBRANE_REGISTRY_AUTH";

/// How long a credential helper may take.
const HELPER_TIMEOUT: Duration = Duration::from_secs(10);

/// A password or token: never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

impl Secret {
    /// The secret itself, for the one header that carries it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// A user name and password for one registry, and where they were found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The user name.
    pub username: String,
    /// The password or token.
    pub password: Secret,
    /// Where they came from, for messages (`MEMBRANE_REGISTRY_AUTH`, a
    /// config file's path, a helper's name); never the secret.
    pub from: String,
}

impl Credentials {
    /// The `Authorization: Basic` value.
    pub fn basic(&self) -> String {
        let pair = format!("{}:{}", self.username, self.password.expose());
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(pair))
    }
}

/// The credentials for `registry` (`host[:port]`), if any are configured.
/// A helper that fails is logged and skipped.
pub async fn lookup(registry: &str) -> Option<Credentials> {
    if let Ok(text) = std::env::var(ENV)
        && let Some(found) = from_env(&text, registry)
    {
        return Some(found);
    }
    let path = config_path()?;
    let text = tokio::fs::read_to_string(&path).await.ok()?;
    let config: DockerConfig = match serde_json::from_str(&text) {
        Ok(config) => config,
        Err(e) => {
            tracing::warn!(
                "{}: not Docker's config.json ({e}); no registry credentials from it",
                path.display()
            );
            return None;
        }
    };
    let keys = config_keys(registry);
    if let Some(helper) = keys.iter().find_map(|k| config.cred_helpers.get(k)) {
        return helper_get(helper, &keys[0]).await;
    }
    for key in &keys {
        if let Some(entry) = config.auths.get(key).or_else(|| find_url_key(&config.auths, key))
            && let Some((username, password)) = entry.pair()
        {
            return Some(Credentials {
                username,
                password: Secret(password),
                from: path.display().to_string(),
            });
        }
    }
    match &config.creds_store {
        Some(store) => helper_get(store, &keys[0]).await,
        None => None,
    }
}

/// `HOST=USER:PASSWORD` entries of [`ENV`] for `registry`.
fn from_env(text: &str, registry: &str) -> Option<Credentials> {
    text.split_whitespace().find_map(|entry| {
        let (host, pair) = entry.split_once('=')?;
        let (username, password) = pair.split_once(':')?;
        (host == registry).then(|| Credentials {
            username: username.to_string(),
            password: Secret(password.to_string()),
            from: ENV.to_string(),
        })
    })
}

fn config_path() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("DOCKER_CONFIG") {
        return Some(PathBuf::from(dir).join("config.json"));
    }
    std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".docker").join("config.json"))
}

/// The keys Docker stores `registry` under, the helper's server name first.
fn config_keys(registry: &str) -> Vec<String> {
    if matches!(registry, "docker.io" | "index.docker.io" | "registry-1.docker.io") {
        vec![
            "https://index.docker.io/v1/".into(),
            "docker.io".into(),
            "index.docker.io".into(),
        ]
    } else {
        vec![registry.to_string()]
    }
}

/// An `auths` key written as a URL (`https://ghcr.io`, `http://r:5000/v2/`).
fn find_url_key<'a>(auths: &'a BTreeMap<String, AuthEntry>, host: &str) -> Option<&'a AuthEntry> {
    auths.iter().find_map(|(key, entry)| {
        let bare = key.split_once("://").map_or(key.as_str(), |(_, rest)| rest);
        (bare.split('/').next() == Some(host)).then_some(entry)
    })
}

#[derive(serde::Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct DockerConfig {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
    #[serde(default)]
    cred_helpers: BTreeMap<String, String>,
    #[serde(default)]
    creds_store: Option<String>,
}

#[derive(serde::Deserialize, Default)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
}

impl AuthEntry {
    fn pair(&self) -> Option<(String, String)> {
        if let (Some(u), Some(p)) = (&self.username, &self.password) {
            return Some((u.clone(), p.clone()));
        }
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(self.auth.as_deref()?.trim())
            .ok()?;
        let text = String::from_utf8(decoded).ok()?;
        let (u, p) = text.split_once(':')?;
        Some((u.to_string(), p.to_string()))
    }
}

/// Runs `docker-credential-NAME get` with `server` on its stdin.
async fn helper_get(name: &str, server: &str) -> Option<Credentials> {
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        tracing::warn!("credential helper {name:?} is not a helper name; no registry credentials from it");
        return None;
    }
    let program = format!("docker-credential-{name}");
    let run = async {
        use tokio::io::AsyncWriteExt as _;
        let mut child = tokio::process::Command::new(&program)
            .arg("get")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(server.as_bytes()).await?;
        }
        child.wait_with_output().await
    };
    let output = match tokio::time::timeout(HELPER_TIMEOUT, run).await {
        Ok(Ok(output)) if output.status.success() => output,
        Ok(Ok(_)) => return None, // the helper has nothing for this server
        Ok(Err(e)) => {
            tracing::warn!("{program}: {e}; no registry credentials from it");
            return None;
        }
        Err(_) => {
            tracing::warn!("{program} did not answer in {HELPER_TIMEOUT:?}; no registry credentials from it");
            return None;
        }
    };
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Answer {
        username: String,
        secret: String,
    }
    let answer: Answer = serde_json::from_slice(&output.stdout).ok()?;
    Some(Credentials {
        username: answer.username,
        password: Secret(answer.secret),
        from: program,
    })
}

/// A `WWW-Authenticate` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    /// Send the credentials as Basic.
    Basic,
    /// Get a token from `realm` first.
    Bearer {
        /// The token endpoint.
        realm: String,
        /// Its `service` parameter.
        service: Option<String>,
        /// Its `scope` parameter.
        scope: Option<String>,
    },
}

/// The challenge in a `WWW-Authenticate` value; `None` for a scheme not
/// spoken here or a Bearer challenge without a realm.
pub fn parse_challenge(header: &str) -> Option<Challenge> {
    let header = header.trim();
    let (scheme, rest) = header.split_once(' ').unwrap_or((header, ""));
    if scheme.eq_ignore_ascii_case("basic") {
        return Some(Challenge::Basic);
    }
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let params = parse_params(rest);
    Some(Challenge::Bearer {
        realm: params.get("realm")?.clone(),
        service: params.get("service").cloned(),
        scope: params.get("scope").cloned(),
    })
}

/// `key="quoted, value",key=token` pairs, keys lower-cased.
fn parse_params(text: &str) -> BTreeMap<String, String> {
    let mut params = BTreeMap::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let key: String = std::iter::from_fn(|| chars.next_if(|c| *c != '=' && *c != ',')).collect();
        if key.is_empty() || chars.next() != Some('=') {
            return params;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next()),
                    '"' => break,
                    c => value.push(c),
                }
            }
        } else {
            value = std::iter::from_fn(|| chars.next_if(|c| *c != ',')).collect();
        }
        params.insert(key.trim().to_ascii_lowercase(), value.trim().to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_parse_with_quoted_commas_and_unknown_schemes() {
        let cases = [
            ("Basic realm=\"Registry Realm\"", Some(Challenge::Basic)),
            (
                "Bearer realm=\"https://auth.docker.io/token\",service=\"registry.docker.io\",scope=\"repository:library/a:pull,push\"",
                Some(Challenge::Bearer {
                    realm: "https://auth.docker.io/token".into(),
                    service: Some("registry.docker.io".into()),
                    scope: Some("repository:library/a:pull,push".into()),
                }),
            ),
            (
                "bearer Realm=https://ghcr.io/token, service=ghcr.io",
                Some(Challenge::Bearer {
                    realm: "https://ghcr.io/token".into(),
                    service: Some("ghcr.io".into()),
                    scope: None,
                }),
            ),
            ("Bearer service=\"x\"", None),
            ("Negotiate abc", None),
            ("", None),
        ];
        for (header, want) in cases {
            assert_eq!(parse_challenge(header), want, "{header}");
        }
    }

    #[test]
    fn env_entries_and_docker_entries_give_the_pair_for_their_host_only() {
        let text = "r.io:5000=ci:t0k:en other.io=u:p";
        let found = from_env(text, "r.io:5000").unwrap();
        assert_eq!((found.username.as_str(), found.password.expose()), ("ci", "t0k:en"));
        assert!(from_env(text, "r.io").is_none());
        assert_eq!(format!("{:?}", found.password), "***", "a secret never prints");
        assert!(!format!("{found:?}").contains("t0k"));

        let entry = AuthEntry {
            auth: Some(base64::engine::general_purpose::STANDARD.encode("alice:s3cret")),
            ..Default::default()
        };
        assert_eq!(entry.pair(), Some(("alice".into(), "s3cret".into())));
        let mut auths = BTreeMap::new();
        auths.insert("https://ghcr.io".to_string(), entry);
        assert!(find_url_key(&auths, "ghcr.io").is_some());
        assert!(find_url_key(&auths, "ghcr.io.evil").is_none());
        assert_eq!(config_keys("docker.io")[0], "https://index.docker.io/v1/");
    }
}
