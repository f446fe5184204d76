//! Reading the messages we relay: their header section, for DSNs (RET=HDRS), the
//! auto-reply loop rules and `queue show`.

/// The header block of a message, up to and including the blank line.
pub fn headers_of(body: &[u8]) -> &[u8] {
    match memchr::memmem::find(body, b"\r\n\r\n") {
        Some(i) => &body[..i + 2],
        None => body,
    }
}
