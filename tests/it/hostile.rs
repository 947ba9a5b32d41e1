//! Hostile pushes: each is refused with a clear message, never a panic or an abort.
//! Time and peak memory are measured by `scripts/bench.sh`, not asserted here.

use crate::push::{files_with, SERVICES_FILE};
use crate::support::Server;

/// Every hostile `.magento/services.yaml`, with the message its refusal must carry.
pub fn hostile_inputs() -> Vec<(&'static str, Vec<u8>, &'static str)> {
    let mut laughs = String::from("a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n");
    for i in 1..10u8 {
        let (p, c) = ((b'a' + i - 1) as char, (b'a' + i) as char);
        laughs.push_str(&format!("{c}: &{c} [*{p},*{p},*{p},*{p},*{p},*{p},*{p},*{p},*{p}]\n"));
    }
    // Many aliases to one large node: 5,000 x 5,000 nodes from a 35 KB file.
    let quadratic = format!("big: &big [{}]\nrefs: [{}]\n", vec!["x"; 5000].join(","), vec!["*big"; 5000].join(","));
    let block = "- ".repeat(20_000) + "x\n";
    let flow = "[".repeat(20_000) + &"]".repeat(20_000) + "\n";
    let mapping = "{a: ".repeat(20_000) + &"}".repeat(20_000) + "\n";
    let big = "a: b\n".repeat(50 * 1024 * 1024 / 5).into_bytes();
    let mut binary: Vec<u8> = (0..4096u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    binary[10] = 0;
    vec![
        ("billion laughs", laughs.into_bytes(), "an alias bomb?"),
        ("quadratic alias bomb", quadratic.into_bytes(), "an alias bomb?"),
        ("20,000-deep block nesting", block.into_bytes(), "nesting too deep"),
        ("20,000-deep flow nesting", flow.into_bytes(), "nesting too deep"),
        ("20,000-deep flow mappings", mapping.into_bytes(), "nesting too deep"),
        ("50 MB blob", big, "is 52428800 bytes; configuration files may be at most 1048576 bytes"),
        ("binary blob", binary, "binary content"),
    ]
}

#[test]
fn hostile_configurations_are_refused_clearly() {
    let s = Server::new("hostile");
    let good = s.commit(&files_with("", ""), "good");
    s.push(&["HEAD:refs/heads/main"]).assert_accepted();
    for (name, content, message) in hostile_inputs() {
        s.commit(&files_with("", ""), "reset");
        s.write(SERVICES_FILE, &content);
        s.commit_all(name);
        let push = s.push(&["HEAD:refs/heads/main"]);
        assert!(!push.ok, "{name}: accepted");
        let remote = push.remote();
        assert!(remote.contains(&format!("{SERVICES_FILE}:")) && remote.contains(message), "{name}: {remote}");
        assert!(remote.contains("hint: "), "{name}: {remote}");
        assert!(!remote.contains("panicked") && !remote.contains("error: "), "{name}: {remote}");
        assert_eq!(s.server_ref("refs/heads/main").as_deref(), Some(good.as_str()), "{name}");
    }
}
