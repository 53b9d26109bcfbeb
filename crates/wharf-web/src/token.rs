//! Comparing secrets a client presents (`X-Error-Token`, `X-Canary-Token`, the debug view's token) without leaking them through timing.

/// Whether `a` and `b` are equal, in time that depends on their lengths only, never on where
/// they first differ: a byte-by-byte early exit would let a client guess a token one byte at a
/// time from response times.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_only_when_every_byte_is() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(constant_time_eq(b"", b""));
    }
}
