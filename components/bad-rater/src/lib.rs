//! `bad-rater`: a test fixture that exports `example:insurance/rater@0.1.0`
//! with a *different* signature from the real one (`rate` takes a string).
//! Linking `gateway` to it must fail validation before anything serves.

wit_bindgen::generate!({
    inline: r#"
        package example:insurance@0.1.0;

        interface rater {
            rate: func(policy: string) -> result<string, string>;
        }

        world bad-rater {
            export rater;
        }
    "#,
    world: "example:insurance/bad-rater",
});

struct BadRater;

impl exports::example::insurance::rater::Guest for BadRater {
    fn rate(policy: String) -> Result<String, String> {
        Ok(policy)
    }
}

export!(BadRater);
