//! What both `reach` components try, in each of them: shared source, one
//! copy (each crate includes it as a module under its own generated
//! bindings; `fetch` is `outbound`'s).

#[path = "../../outbound/src/fetch.rs"]
mod fetch;

/// GETs `url` through wasi:http.
pub fn fetch(url: &str) -> Result<String, String> {
    fetch::get(url)
}

/// Reads the file at `path`.
pub fn read(path: &str) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))
}

/// Opens `bucket` and writes a key.
pub fn store(bucket: &str) -> Result<String, String> {
    use crate::wasi::keyvalue::store;
    let bucket = store::open(bucket).map_err(|e| format!("{e:?}"))?;
    bucket.set("reached", b"yes").map_err(|e| format!("{e:?}"))?;
    Ok("ok".to_string())
}
