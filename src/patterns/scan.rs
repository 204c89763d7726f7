//! Byte pairs for the literal gates, and how the pre-checks' bytes are picked.
//!
//! [`PairSet`] is a 64 Ki-bit table of two-byte pairs: the start gate looks up a line's first two
//! bytes in it. [`Pairs`] is the pre-check in front of the per-line literal search: does a line
//! contain one of a few pairs, one taken from each literal ([`pick_pairs`]; [`rare_bytes`] when no
//! pairs fit)?
//!
//! A single rare byte per literal (`memchr3` on `A`, `E`, `S` for the built-in literals) let
//! through every line with a capitalised `And`, `Edge` or `README`, and each such line then paid
//! for a Teddy search; a pair such as ` A`, `Er` or `FA` is in almost no line that lacks the literal.
//! On x86_64 the scan compares 32 positions a step with AVX2 (detected once, when the pairs are
//! built) or 16 with SSE2 (part of the base ISA); elsewhere, and for lines under 17 bytes, it is a
//! table lookup per position. Per line this measured 13-19% faster than `memchr3` followed by Teddy
//! on the engine bench's transcript (BENCHMARKS.md).

/// A set of two-byte pairs (64 Ki bits = 8 KiB): one lookup per question.
pub(crate) struct PairSet(Box<[u64; 1024]>);

impl std::fmt::Debug for PairSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PairSet")
    }
}

impl PairSet {
    pub(crate) fn new() -> PairSet {
        PairSet(Box::new([0; 1024]))
    }

    fn index(a: u8, b: u8) -> usize {
        (usize::from(a) << 8) | usize::from(b)
    }

    pub(crate) fn insert(&mut self, a: u8, b: u8) {
        let i = Self::index(a, b);
        self.0[i / 64] |= 1 << (i % 64);
    }

    /// Is `a` followed by `b` in the set?
    #[inline]
    pub(crate) fn has(&self, a: u8, b: u8) -> bool {
        let i = Self::index(a, b);
        self.0[i / 64] & (1 << (i % 64)) != 0
    }

    /// Do the first two bytes of `s` make a pair in the set?
    #[inline]
    pub(crate) fn starts(&self, s: &[u8]) -> bool {
        matches!(s, [a, b, ..] if self.has(*a, *b))
    }
}

/// At most this many pairs; a literal set that needs more gets no pair pre-check.
pub(crate) const MAX_PAIRS: usize = 8;

/// A set of 1 to [`MAX_PAIRS`] byte pairs. [`Pairs::contains`] is a pre-check: true exactly for the
/// lines that hold one of the pairs.
pub(crate) struct Pairs {
    /// Each pair's first and second byte, repeated 32 times (ready for a vector load).
    first: [[u8; 32]; MAX_PAIRS],
    second: [[u8; 32]; MAX_PAIRS],
    len: usize,
    /// The CPU has AVX2 (checked once, when built): 32 positions a step instead of 16.
    #[cfg(target_arch = "x86_64")]
    avx2: bool,
    /// The same pairs as a table, for short lines.
    table: PairSet,
}

impl std::fmt::Debug for Pairs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let pairs: Vec<String> = (0..self.len)
            .map(|k| String::from_utf8_lossy(&[self.first[k][0], self.second[k][0]]).into_owned())
            .collect();
        f.debug_tuple("Pairs").field(&pairs).finish()
    }
}

/// Calls `$scan::<N>($args)` for `N` = `$len` (1 to [`MAX_PAIRS`]): the pair loop is unrolled and
/// its vectors stay in registers.
#[cfg(target_arch = "x86_64")]
macro_rules! with_len {
    ($len:expr, $scan:ident($($arg:expr),*)) => {
        match $len {
            1 => $scan::<1>($($arg),*),
            2 => $scan::<2>($($arg),*),
            3 => $scan::<3>($($arg),*),
            4 => $scan::<4>($($arg),*),
            5 => $scan::<5>($($arg),*),
            6 => $scan::<6>($($arg),*),
            7 => $scan::<7>($($arg),*),
            _ => $scan::<8>($($arg),*),
        }
    };
}

impl Pairs {
    /// The pairs; `None` when there are none or more than [`MAX_PAIRS`].
    pub(crate) fn new(pairs: &[(u8, u8)]) -> Option<Pairs> {
        let mut distinct = pairs.to_vec();
        distinct.sort_unstable();
        distinct.dedup();
        if distinct.is_empty() || distinct.len() > MAX_PAIRS {
            return None;
        }
        let mut p = Pairs {
            first: [[0; 32]; MAX_PAIRS],
            second: [[0; 32]; MAX_PAIRS],
            len: distinct.len(),
            #[cfg(target_arch = "x86_64")]
            avx2: std::arch::is_x86_feature_detected!("avx2"),
            table: PairSet::new(),
        };
        for (k, &(a, b)) in distinct.iter().enumerate() {
            p.first[k] = [a; 32];
            p.second[k] = [b; 32];
            p.table.insert(a, b);
        }
        Some(p)
    }

    /// Does one of the pairs occur in `hay`?
    #[inline]
    pub(crate) fn contains(&self, hay: &[u8]) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            if self.avx2 && hay.len() > 32 {
                // SAFETY: `avx2` says the CPU has AVX2.
                return unsafe { with_len!(self.len, contains_avx2(self, hay)) };
            }
            if hay.len() > 16 {
                // SAFETY: SSE2 is part of the x86_64 base ISA, so every x86_64 CPU has it.
                return unsafe { with_len!(self.len, contains_sse2(self, hay)) };
            }
        }
        hay.windows(2).any(|w| self.table.has(w[0], w[1]))
    }
}

/// [`Pairs::contains`] for `hay.len() > 16`, the first `N` pairs: 16 pair starts a step (bytes
/// `at..at + 17`), the last step moved back to end at the last byte, so nothing is read outside
/// `hay`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse2")]
fn contains_sse2<const N: usize>(p: &Pairs, hay: &[u8]) -> bool {
    use std::arch::x86_64::{
        __m128i, _mm_and_si128, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_or_si128,
    };
    let load = |bytes: &[u8]| {
        let block: &[u8; 16] = bytes.first_chunk().expect("16 bytes");
        // SAFETY: `block` is 16 readable bytes; `loadu` has no alignment requirement.
        unsafe { _mm_loadu_si128(block.as_ptr().cast::<__m128i>()) }
    };
    let first: [__m128i; N] = std::array::from_fn(|k| load(&p.first[k]));
    let second: [__m128i; N] = std::array::from_fn(|k| load(&p.second[k]));
    let last = hay.len() - 17;
    let mut next = 0;
    loop {
        let at = usize::min(next, last);
        let (v0, v1) = (load(&hay[at..]), load(&hay[at + 1..]));
        let mut any = _mm_and_si128(_mm_cmpeq_epi8(v0, first[0]), _mm_cmpeq_epi8(v1, second[0]));
        for k in 1..N {
            let both = _mm_and_si128(_mm_cmpeq_epi8(v0, first[k]), _mm_cmpeq_epi8(v1, second[k]));
            any = _mm_or_si128(any, both);
        }
        if _mm_movemask_epi8(any) != 0 {
            return true;
        }
        if at == last {
            return false;
        }
        next += 16;
    }
}

/// [`contains_sse2`] with 32 pair starts a step, for `hay.len() > 32`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn contains_avx2<const N: usize>(p: &Pairs, hay: &[u8]) -> bool {
    use std::arch::x86_64::{
        __m256i, _mm256_and_si256, _mm256_cmpeq_epi8, _mm256_loadu_si256, _mm256_movemask_epi8,
        _mm256_or_si256,
    };
    let load = |bytes: &[u8]| {
        let block: &[u8; 32] = bytes.first_chunk().expect("32 bytes");
        // SAFETY: `block` is 32 readable bytes; `loadu` has no alignment requirement.
        unsafe { _mm256_loadu_si256(block.as_ptr().cast::<__m256i>()) }
    };
    let first: [__m256i; N] = std::array::from_fn(|k| load(&p.first[k]));
    let second: [__m256i; N] = std::array::from_fn(|k| load(&p.second[k]));
    let last = hay.len() - 33;
    let mut next = 0;
    loop {
        let at = usize::min(next, last);
        let (v0, v1) = (load(&hay[at..]), load(&hay[at + 1..]));
        let mut any = _mm256_and_si256(
            _mm256_cmpeq_epi8(v0, first[0]),
            _mm256_cmpeq_epi8(v1, second[0]),
        );
        for k in 1..N {
            let both = _mm256_and_si256(
                _mm256_cmpeq_epi8(v0, first[k]),
                _mm256_cmpeq_epi8(v1, second[k]),
            );
            any = _mm256_or_si256(any, both);
        }
        if _mm256_movemask_epi8(any) != 0 {
            return true;
        }
        if at == last {
            return false;
        }
        next += 32;
    }
}

/// How common a byte is in agent output, roughly (higher is more common): lower-case letters and the
/// space most, then digits and code punctuation, then upper case and rare punctuation, then the
/// bytes of non-ASCII characters. Only speed depends on it, never a result.
pub(crate) fn byte_rank(b: u8) -> u8 {
    match b {
        b' ' | b'a'..=b'z' => 9,
        b'0'..=b'9' | b'.' | b',' | b'-' | b'_' | b'/' | b'(' | b')' | b'=' | b'"' | b'\'' => 6,
        b':' | b'\t' | b'\n' | b'\r' => 5,
        b'A'..=b'Z' => 3,
        0..=0x7f => 4,
        _ => 2,
    }
}

/// A pair from each literal for [`Pairs`]: the adjacent two bytes with the lowest summed
/// [`byte_rank`] (the earliest of equals). `None` when a literal is shorter than two bytes or its
/// best pair is two common bytes (then the pre-check would pass most lines and only cost time).
pub(crate) fn pick_pairs(lits: &[Vec<u8>]) -> Option<Vec<(u8, u8)>> {
    /// Two lower-case letters or spaces score 18; one byte rarer than that is required.
    const MAX_SCORE: u8 = 15;
    lits.iter()
        .map(|lit| {
            let (a, b) = lit
                .windows(2)
                .map(|w| (w[0], w[1]))
                .min_by_key(|&(a, b)| byte_rank(a) + byte_rank(b))?;
            (byte_rank(a) + byte_rank(b) <= MAX_SCORE).then_some((a, b))
        })
        .collect()
}

/// Up to three bytes, one of which occurs in every literal, all rarer than code punctuation: the
/// rarest byte of each literal (preferring one already picked). `None` when that takes more than
/// three bytes or a common one (then the `memchr` would pass most lines and only cost time).
pub(crate) fn rare_bytes(lits: &[Vec<u8>]) -> Option<Vec<u8>> {
    let mut picked: Vec<u8> = Vec::new();
    for lit in lits {
        if lit.iter().any(|b| picked.contains(b)) {
            continue;
        }
        let &best = lit.iter().min_by_key(|&&b| byte_rank(b))?;
        if byte_rank(best) > 4 || picked.len() == 3 {
            return None;
        }
        picked.push(best);
    }
    (!picked.is_empty()).then_some(picked)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn lits(xs: &[&str]) -> Vec<Vec<u8>> {
        xs.iter().map(|x| x.as_bytes().to_vec()).collect()
    }

    #[test]
    fn finds_a_pair_at_every_position_and_length() {
        let mut p = Pairs::new(&[(b' ', b'A'), (b'E', b'r')]).expect("pairs");
        // Every path: AVX2 when the machine has it, then SSE2, with the scalar path for short lines.
        #[cfg(target_arch = "x86_64")]
        let rounds = [p.avx2, false];
        #[cfg(not(target_arch = "x86_64"))]
        let rounds = [false];
        for avx2 in rounds {
            #[cfg(target_arch = "x86_64")]
            {
                p.avx2 = avx2;
            }
            for len in 2..80 {
                for at in 0..len - 1 {
                    let mut hay = vec![b'x'; len];
                    hay[at] = b'E';
                    hay[at + 1] = b'r';
                    assert!(p.contains(&hay), "len {len} at {at} avx2 {avx2}");
                    // The pair reversed is not the pair.
                    hay[at] = b'r';
                    hay[at + 1] = b'E';
                    assert!(!p.contains(&hay), "reversed, len {len} at {at} avx2 {avx2}");
                }
            }
        }
    }

    #[test]
    fn rare_bytes_cover_every_literal_or_give_up() {
        let builtin = lits(&[
            " Agent:",
            " Agent should",
            " FAILED",
            "Error: ",
            "Exception: ",
            "Segmentation fault",
        ]);
        let rare = rare_bytes(&builtin).expect("rare bytes for the built-in literals");
        assert!(rare.len() <= 3);
        for l in &builtin {
            assert!(l.iter().any(|b| rare.contains(b)), "{l:?} not covered");
        }
        // Only common bytes (`svc12-`): no pre-check.
        assert_eq!(rare_bytes(&lits(&["svc12-", "svc13-"])), None);
        // Four literals with four different rare bytes: more than memchr3 takes.
        assert_eq!(rare_bytes(&lits(&["A:", "B:", "C:", "D:"])), None);
    }

    #[test]
    fn picks_a_rare_pair_per_literal_or_gives_up() {
        assert_eq!(
            pick_pairs(&lits(&[
                " Agent:",
                " FAILED",
                "Error: ",
                "Segmentation fault"
            ])),
            Some(vec![(b' ', b'A'), (b'F', b'A'), (b'E', b'r'), (b'S', b'e')])
        );
        assert_eq!(pick_pairs(&[b"svc-".to_vec()]), Some(vec![(b'c', b'-')]));
        assert_eq!(pick_pairs(&[b"ab cd".to_vec()]), None, "only common pairs");
        assert_eq!(pick_pairs(&[b"A".to_vec()]), None, "no pair in one byte");
        assert!(Pairs::new(&[(1, 2); 0]).is_none());
        let nine: Vec<(u8, u8)> = (0..9).map(|i| (b'A' + i, b':')).collect();
        assert!(Pairs::new(&nine).is_none(), "more than MAX_PAIRS");
    }

    proptest! {
        /// The vector scan says what a plain scan of the windows says.
        #[test]
        fn agrees_with_a_plain_scan(
            hay in proptest::collection::vec(prop_oneof![Just(b' '), Just(b'A'), Just(b'E'), Just(b'r'), any::<u8>()], 0..90),
            pairs in proptest::collection::vec((prop_oneof![Just(b' '), Just(b'E'), any::<u8>()], prop_oneof![Just(b'A'), Just(b'r'), any::<u8>()]), 1..=MAX_PAIRS),
        ) {
            let mut p = Pairs::new(&pairs).expect("pairs");
            let want = hay.windows(2).any(|w| pairs.contains(&(w[0], w[1])));
            prop_assert_eq!(p.contains(&hay), want);
            // The 16-byte path too, on a machine with AVX2.
            #[cfg(target_arch = "x86_64")]
            {
                p.avx2 = false;
                prop_assert_eq!(p.contains(&hay), want);
            }
        }
    }
}
