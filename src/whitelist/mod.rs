//! The MSSanté whitelist (liste blanche).

pub mod c14n;
pub mod signature;
