//! `config-versions`: reads its config table through each version of
//! wasi:config that SDKs import, so a test can check that the host serves
//! every one of them from the same manifest table.

wit_bindgen::generate!({
    path: "wit",
    world: "example:config-versions/config-versions",
    generate_all,
});

use exports::example::config_versions::reader::Guest;
use wasi::config0_2_0_draft::{runtime, store as store_draft};
use wasi::config0_2_0_draft_2024_09_27::store as store_2024;
use wasi::config0_2_0_rc_1::store as store_rc1;

struct Reader;

/// What every version's `get-all` returns, or its error as text.
type All = Result<Vec<(String, String)>, String>;

fn all(version: &str) -> All {
    match version {
        "runtime-draft" => runtime::get_all().map_err(|e| format!("{e:?}")),
        "store-draft" => store_draft::get_all().map_err(|e| format!("{e:?}")),
        "store-2024-09-27" => store_2024::get_all().map_err(|e| format!("{e:?}")),
        "store-rc1" => store_rc1::get_all().map_err(|e| format!("{e:?}")),
        other => Err(format!("unknown version {other}")),
    }
}

impl Guest for Reader {
    fn read(version: String, key: String) -> Result<Option<String>, String> {
        match version.as_str() {
            "runtime-draft" => runtime::get(&key).map_err(|e| format!("{e:?}")),
            "store-draft" => store_draft::get(&key).map_err(|e| format!("{e:?}")),
            "store-2024-09-27" => store_2024::get(&key).map_err(|e| format!("{e:?}")),
            "store-rc1" => store_rc1::get(&key).map_err(|e| format!("{e:?}")),
            other => Err(format!("unknown version {other}")),
        }
    }

    fn keys(version: String) -> Result<Vec<String>, String> {
        let mut keys: Vec<String> = all(&version)?.into_iter().map(|(k, _)| k).collect();
        keys.sort();
        Ok(keys)
    }
}

export!(Reader);
