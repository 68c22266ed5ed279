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

/// Implements `example:reach/reach` for `$ty` with the probes above; a
/// `fail` traps with `$name` in its message.
macro_rules! export_reach {
    ($ty:ty, $name:literal) => {
        impl exports::example::reach::reach::Guest for $ty {
            fn fetch(url: String) -> Result<String, String> {
                probe::fetch(&url)
            }
            fn read(path: String) -> Result<String, String> {
                probe::read(&path)
            }
            fn store(bucket: String) -> Result<String, String> {
                probe::store(&bucket)
            }
            fn fail(message: String) {
                panic!("{}: {message}", $name);
            }
        }
    };
}
