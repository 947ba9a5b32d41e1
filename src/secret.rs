//! Random secrets (service passwords, API tokens, session ids) and their digests.

use sha2::Digest;

/// `N` random bytes from the kernel.
pub fn random<const N: usize>() -> Result<[u8; N], String> {
    use std::io::Read;
    let mut bytes = [0u8; N];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|e| format!("/dev/urandom: {e}"))?;
    Ok(bytes)
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// 256 random bits as 64 hex digits: an API token or a session id.
pub fn token() -> Result<String, String> {
    Ok(hex(&random::<32>()?))
}

/// The SHA-256 of a secret, in hex: what is stored of a token (a token has 256 random bits,
/// so a fast digest cannot be reversed by guessing).
pub fn digest(secret: &str) -> String {
    hex(&sha2::Sha256::digest(secret.as_bytes()))
}

/// Compares two strings in a time that does not depend on where they differ.
pub fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
