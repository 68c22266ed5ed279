//! `reach`: tries to reach the network, a directory and a key-value bucket
//! on request (`probe.rs`), so tests can show what its grants allow, alone
//! or composed into a caller with other grants.

wit_bindgen::generate!({
    path: ["../../wit/keyvalue", "../../wit/reach"],
    world: "example:reach/reach-component",
    generate_all,
});

mod probe;

struct Reach;

impl exports::example::reach::reach::Guest for Reach {
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
        panic!("reach: {message}");
    }
}

export!(Reach);
