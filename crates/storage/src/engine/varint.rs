//! LEB128 varints (7 bits a byte, low bits first, the high bit set on every
//! byte but the last): the one implementation behind the records, chunks
//! and postings.

/// Appends `n`.
#[inline]
pub(crate) fn put(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

/// Reads the varint at `*pos` and moves `pos` past it; `None` if it is
/// truncated or longer than a u64 takes.
#[inline]
pub(crate) fn get(buf: &[u8], pos: &mut usize) -> Option<u64> {
    let mut n = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *buf.get(*pos)?;
        *pos += 1;
        n |= u64::from(b & 0x7f) << shift;
        if b < 0x80 {
            return Some(n);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    #[test]
    fn round_trips_and_refuses_truncated_and_overlong() {
        for n in [0, 1, 127, 128, 300, u32::MAX as u64, u64::MAX] {
            let mut out = Vec::new();
            super::put(&mut out, n);
            let mut pos = 0;
            assert_eq!(super::get(&out, &mut pos), Some(n));
            assert_eq!(pos, out.len());
            assert_eq!(super::get(&out[..out.len() - 1], &mut 0), None);
        }
        assert_eq!(super::get(&[0x80; 10], &mut 0), None);
    }
}
