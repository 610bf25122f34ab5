//! Text comparisons that stay fast inside WebAssembly, where `core`'s
//! `memcmp` goes a byte at a time and `memchr` four bytes at a time (they
//! were a sixth of a field-merge call): there, eight bytes at a time; in
//! native builds, the platform's own routines.

/// `a == b`, and at once when both are the same text in memory.
pub fn same_text(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    if std::ptr::eq(a, b) {
        return true;
    }
    #[cfg(target_arch = "wasm32")]
    return words_equal(a, b);
    #[cfg(not(target_arch = "wasm32"))]
    return a == b;
}

/// True when `text` contains the byte `needle`.
pub fn contains_byte(text: &str, needle: u8) -> bool {
    #[cfg(target_arch = "wasm32")]
    return words_contain(text.as_bytes(), needle);
    #[cfg(not(target_arch = "wasm32"))]
    return text.as_bytes().contains(&needle);
}

#[cfg(any(test, target_arch = "wasm32"))]
fn word(chunk: &[u8]) -> u64 {
    u64::from_le_bytes(chunk.try_into().unwrap_or_default())
}

#[cfg(any(test, target_arch = "wasm32"))]
fn words_equal(a: &[u8], b: &[u8]) -> bool {
    let (wa, wb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tails_equal = wa.remainder() == wb.remainder();
    tails_equal && wa.zip(wb).all(|(x, y)| word(x) == word(y))
}

#[cfg(any(test, target_arch = "wasm32"))]
fn words_contain(hay: &[u8], needle: u8) -> bool {
    const LOW: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let pattern = LOW * u64::from(needle);
    let words = hay.chunks_exact(8);
    let tail = words.remainder();
    // A byte of `w` is zero exactly where `hay` has `needle` (the classic test).
    words.map(|c| word(c) ^ pattern).any(|w| w.wrapping_sub(LOW) & !w & HIGH != 0) || tail.contains(&needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn word_at_a_time_agrees_with_bytes() {
        let text = "Lorem ipsum dolor sit amet, \\ consectetur \"adipiscing\" é elit".repeat(3);
        let bytes = text.as_bytes();
        for start in 0..20 {
            for end in (start..bytes.len()).step_by(7) {
                let slice = &bytes[start..end];
                for needle in [b'\\', b'"', b'L', 0xa9, b'z', 0, 0x80] {
                    assert_eq!(words_contain(slice, needle), slice.contains(&needle), "{start}..{end} {needle}");
                }
                let copy = slice.to_vec();
                assert!(words_equal(slice, &copy));
                for flip in [0, slice.len() / 2, slice.len().saturating_sub(1)] {
                    if let Some(&b) = copy.get(flip) {
                        let mut other = copy.clone();
                        other[flip] = b ^ 1;
                        assert!(!words_equal(slice, &other), "{start}..{end} flipped at {flip}");
                    }
                }
            }
        }
        assert!(same_text(&text, &text.clone()) && !same_text(&text, &text[1..]));
        assert!(contains_byte(&text, b'\\') && !contains_byte("plain", b'\\'));
    }
}
