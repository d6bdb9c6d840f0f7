//! A step whose error type is a plain string: refused by the host's link-time
//! convention check (tests/integration assert the message).

wit_bindgen::generate!({
    world: "guests:broken-convention/broken-convention",
    path: "wit",
});

struct Broken;

impl exports::guests::broken_convention::steps::Guest for Broken {
    fn greet(name: String) -> Result<String, String> {
        Ok(format!("hello {name}"))
    }
}

impl Guest for Broken {
    fn run() -> String {
        guests::broken_convention::steps::greet("world").unwrap_or_else(|error| error)
    }
}

export!(Broken);
