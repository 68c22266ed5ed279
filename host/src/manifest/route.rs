//! The `route` of an `http` binding, with Spin's rules: `/a/b` matches that
//! path only; `/a/...` matches `/a` and every path under it (`/...`: every
//! path). Among the routes that match, an exact route wins, else the longest
//! prefix. Parsing and matching only; what a match hands the guest is the
//! `http` medium's business.

use std::fmt;

/// The suffix that makes a route a wildcard.
const WILDCARD: &str = "/...";

/// A parsed route.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RoutePattern {
    /// `/a/b`: this path only.
    Exact(String),
    /// `/a/...`: `/a` and everything under it. Holds the prefix without the
    /// wildcard (`/a`; empty for `/...`).
    Prefix(String),
}

impl RoutePattern {
    /// Parses a route as written in the manifest; the error says why not.
    pub fn parse(route: &str) -> Result<RoutePattern, String> {
        if !route.starts_with('/') {
            return Err(format!("{route:?} must start with `/`"));
        }
        if route.contains(['?', '#']) || route.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!(
                "{route:?} must be a plain path (no query, fragment, spaces or control characters)"
            ));
        }
        let (pattern, rest) = match route.strip_suffix(WILDCARD) {
            Some(prefix) => (RoutePattern::Prefix(prefix.to_string()), prefix),
            None if route == "/.." || route.ends_with("/..") => {
                return Err(format!("{route:?}: a wildcard is `/...` (three dots)"));
            }
            None => (RoutePattern::Exact(route.to_string()), route),
        };
        if rest.contains("...") {
            return Err(format!("{route:?}: `...` may only end a route, as `/...`"));
        }
        if rest.contains("//") {
            return Err(format!("{route:?} has an empty segment (`//`)"));
        }
        Ok(pattern)
    }

    /// The route without its wildcard: Spin's `spin-component-route`.
    pub fn base(&self) -> &str {
        match self {
            RoutePattern::Exact(path) | RoutePattern::Prefix(path) => path,
        }
    }

    /// Whether `path` matches, and if so the rest of it after the route's
    /// base (Spin's `spin-path-info`: empty for an exact route).
    pub fn matches<'p>(&self, path: &'p str) -> Option<&'p str> {
        match self {
            RoutePattern::Exact(exact) => (path == exact).then_some(""),
            RoutePattern::Prefix(prefix) => {
                let rest = path.strip_prefix(prefix.as_str())?;
                (rest.is_empty() || rest.starts_with('/')).then_some(rest)
            }
        }
    }

    /// How specific a match is: an exact route beats any prefix; a longer
    /// prefix beats a shorter one.
    pub fn specificity(&self) -> (bool, usize) {
        match self {
            RoutePattern::Exact(path) => (true, path.len()),
            RoutePattern::Prefix(prefix) => (false, prefix.len()),
        }
    }
}

impl fmt::Display for RoutePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RoutePattern::Exact(path) => f.write_str(path),
            RoutePattern::Prefix(prefix) => write!(f, "{prefix}{WILDCARD}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(route: &str) -> RoutePattern {
        RoutePattern::parse(route).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn a_wildcard_matches_its_base_and_below_but_not_a_longer_name() {
        let api = parse("/api/...");
        assert_eq!(api.matches("/api"), Some(""));
        assert_eq!(api.matches("/api/"), Some("/"));
        assert_eq!(api.matches("/api/v1/x"), Some("/v1/x"));
        assert_eq!(api.matches("/apix"), None);
        assert_eq!(parse("/...").matches("/anything"), Some("/anything"));
        assert_eq!(parse("/...").base(), "");
    }

    #[test]
    fn an_exact_route_matches_only_itself_and_outranks_a_wildcard() {
        let exact = parse("/api");
        assert_eq!(exact.matches("/api"), Some(""));
        assert_eq!(exact.matches("/api/"), None);
        assert!(exact.specificity() > parse("/api/...").specificity());
        assert!(parse("/api/v1/...").specificity() > parse("/api/...").specificity());
    }

    #[test]
    fn malformed_routes_say_why() {
        for bad in ["api", "/a/.../b", "/a?x", "/a//b", "/a/..", "/a b"] {
            assert!(RoutePattern::parse(bad).is_err(), "{bad} was accepted");
        }
        assert_eq!(parse("/a/...").to_string(), "/a/...");
    }
}
