//! Byte scanning for the one-pass readers of the kernel's own file forms: what they meet on
//! every line of every container's files at every scrape.

/// The index of the first byte at or below `b' '` (ASCII white space and the control
/// characters) in `bytes` from `at`, or `bytes.len()`. Eight bytes a step: the keys of
/// `memory.stat` are 5 to 30 bytes, and scanning them a byte at a time was ~40% of reading
/// the file (perf, 1,000 containers).
pub(super) fn to_space_or_control(bytes: &[u8], mut at: usize) -> usize {
    const ONES: u64 = u64::from_ne_bytes([1; 8]);
    const HIGH_BITS: u64 = u64::from_ne_bytes([0x80; 8]);
    while let Some(Ok(chunk)) = bytes.get(at..at + 8).map(<[u8; 8]>::try_from) {
        let word = u64::from_le_bytes(chunk);
        // The high bit of each byte below 0x21 (bytes of 0x80 and above are masked out by
        // `!word`). Only the lowest is certain (a borrow runs upward from a byte that was
        // below already), and only the lowest is used.
        let below = word.wrapping_sub(ONES * 0x21) & !word & HIGH_BITS;
        if below != 0 {
            return at + (below.trailing_zeros() / 8) as usize;
        }
        at += 8;
    }
    at + bytes[at.min(bytes.len())..].iter().take_while(|&&b| b > b' ').count()
}

/// The decimal number at the start of `bytes`, and what follows it; `None` without a digit
/// or past 19 digits (which could overflow a u64), where the one-pass readers leave the
/// line to their general reading.
///
/// One pass over the digits: counting them first and then folding them was two, which cost
/// as much as the rest of a `memory.stat` line's reading (perf).
pub(super) fn leading_u64(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let mut value = 0u64;
    let mut digits = 0;
    while let Some(digit) = bytes.get(digits).map(|b| b.wrapping_sub(b'0')).filter(|d| *d < 10) {
        if digits == 19 {
            return None;
        }
        value = value * 10 + u64::from(digit);
        digits += 1;
    }
    (digits > 0).then(|| (value, &bytes[digits..]))
}

/// Past `digits.digits` at the start of `text`.
pub(super) fn skip_decimal(text: &[u8]) -> Option<&[u8]> {
    let whole = text.iter().take_while(|b| b.is_ascii_digit()).count();
    let rest = text[whole..].strip_prefix(b".")?;
    let fraction = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    (whole > 0 && fraction > 0).then_some(&rest[fraction..])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn byte_at_a_time(bytes: &[u8], at: usize) -> usize {
        at + bytes[at..].iter().take_while(|&&b| b > b' ').count()
    }

    #[test]
    fn to_space_or_control_finds_what_a_byte_loop_finds() {
        // Every position of every stop byte (and none) in strings around the 8-byte steps,
        // with bytes of 0x80 and above and the bytes just above and below the bound about.
        let fillers = [b'a', b'!', 0x80, 0xff, b'~'];
        let stops = [b' ', b'\n', b'\t', b'\r', 0x00, 0x01, 0x1f, 0x20];
        for len in 0..27 {
            for filler in fillers {
                let plain = vec![filler; len];
                for at in 0..=len {
                    assert_eq!(to_space_or_control(&plain, at), len, "{plain:?} from {at}");
                }
                for stop in stops {
                    for pos in 0..len {
                        let mut bytes = plain.clone();
                        bytes[pos] = stop;
                        // A second stop later must not hide or move the first.
                        if pos + 3 < len {
                            bytes[pos + 3] = b' ';
                        }
                        for at in 0..=len {
                            assert_eq!(
                                to_space_or_control(&bytes, at),
                                byte_at_a_time(&bytes, at),
                                "{bytes:?} from {at}"
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn leading_u64_reads_up_to_nineteen_digits_and_skip_decimal_a_fraction() {
        assert_eq!(leading_u64(b"123 x"), Some((123, &b" x"[..])));
        assert_eq!(
            leading_u64(b"9999999999999999999"),
            Some((9_999_999_999_999_999_999, &b""[..]))
        );
        assert_eq!(leading_u64(b"12345678901234567890"), None);
        assert_eq!(leading_u64(b"x1"), None);
        assert_eq!(skip_decimal(b"0.25 total"), Some(&b" total"[..]));
        assert_eq!(skip_decimal(b"1. x"), None);
    }
}
