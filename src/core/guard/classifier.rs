//! The learned injection classifier: logistic regression over hashed
//! features of the normalised text, trained offline by
//! `scripts/train_guard.py`, weights shipped in `guard_model.bin`.
//!
//! Features (hashed into 2^BITS buckets), all binary:
//! - byte 3-, 4- and 5-grams of `" " + text + " "` (multiplicative hash of
//!   the packed bytes, one seed per length);
//! - word unigrams ([`word_hash`]) and bigrams (the two word hashes mixed),
//!   words being maximal runs of ASCII alphanumerics, `_`, `'` and
//!   non-ASCII bytes.
//!
//! Each distinct feature of a scored span adds 1/sqrt(N) (N = distinct
//! features in the span), so logit = bias + scale * sum(w[i]) / sqrt(N);
//! repetition alone cannot raise it. The bias depends on the length of the
//! whole text: short texts (few features, where the weights of one or two
//! phrases decide) have their own operating point, calibrated apart from the
//! long ones (documents, role-play templates) where most attacks hide.
//!
//! Scored spans ([`spans`]): the whole text and, when it is longer than
//! [`WINDOW`] bytes, every window of [`WINDOW`] bytes starting each
//! [`STRIDE`] bytes (edges moved to whitespace), so an injection buried in a
//! long document is scored on its own and not diluted. The score is the
//! maximum over the spans; the operating point is calibrated on those
//! maxima over benign texts.
//!
//! The training script does not re-implement any of this: it asks the Rust
//! code (`guard_report --features`) for the feature indices of every span
//! of every text, so training and serving cannot drift apart.

use std::cell::RefCell;

/// Hash space: 2^BITS weights (1 MiB of int8).
pub const BITS: u32 = 20;
const MASK: u32 = (1 << BITS) - 1;
/// Window size in bytes of normalised text.
pub const WINDOW: usize = 512;
/// Distance between window starts (half a window: a payload of up to
/// `WINDOW - STRIDE` bytes lies wholly inside one window).
pub const STRIDE: usize = 256;
/// How far a window edge may move to reach whitespace.
const EDGE_SLACK: usize = 40;

/// Word bytes: ASCII alphanumerics, `_`, `'` and every non-ASCII byte.
#[allow(clippy::indexing_slicing)] // const loop, i < 256
const WORD_BYTE: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 256 {
        let c = i as u8;
        t[i] = c.is_ascii_alphanumeric() || c == b'_' || c == b'\'' || c >= 0x80;
        i += 1;
    }
    t
};

#[inline]
fn is_word_byte(c: u8) -> bool {
    WORD_BYTE.get(usize::from(c)).copied().unwrap_or(false)
}

const WH_SEED: u64 = 0x243f_6a88_85a3_08d3;

#[inline]
fn wh_mix(h: u64, acc: u64) -> u64 {
    (h ^ acc)
        .wrapping_mul(0x9e37_79b9_7f4a_7c15)
        .rotate_left(29)
}

#[inline]
fn wh_finish(h: u64, len: usize) -> u32 {
    let h = h ^ (len as u64);
    let h = (h ^ (h >> 32)).wrapping_mul(0xd6e8_feb8_6659_fd93);
    (h >> 32) as u32
}

/// Hash of a word (also used for the rule trigger table): 8 bytes at a
/// time, multiply-rotate.
pub fn word_hash(w: &[u8]) -> u32 {
    let mut h = WH_SEED;
    let mut acc = 0u64;
    let mut nb = 0u32;
    for &c in w {
        acc |= u64::from(c) << (8 * nb);
        nb += 1;
        if nb == 8 {
            h = wh_mix(h, acc);
            acc = 0;
            nb = 0;
        }
    }
    if nb > 0 {
        h = wh_mix(h, acc);
    }
    wh_finish(h, w.len())
}

/// A word of the normalised text: its [`word_hash`] and byte range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Word {
    pub hash: u32,
    pub start: u32,
    pub end: u32,
}

/// Splits normalised text into words (appending to `out`, cleared first).
pub fn words(text: &str, out: &mut Vec<Word>) {
    out.clear();
    let mut start = 0usize;
    let mut in_word = false;
    let mut h = WH_SEED;
    let mut acc = 0u64;
    let mut nb = 0u32;
    let b = text.as_bytes();
    for (i, &c) in b.iter().enumerate() {
        if is_word_byte(c) {
            if !in_word {
                in_word = true;
                start = i;
                h = WH_SEED;
                acc = 0;
                nb = 0;
            }
            acc |= u64::from(c) << (8 * nb);
            nb += 1;
            if nb == 8 {
                h = wh_mix(h, acc);
                acc = 0;
                nb = 0;
            }
        } else if in_word {
            in_word = false;
            if nb > 0 {
                h = wh_mix(h, acc);
            }
            out.push(Word {
                hash: wh_finish(h, i - start),
                start: start as u32,
                end: i as u32,
            });
        }
    }
    if in_word {
        if nb > 0 {
            h = wh_mix(h, acc);
        }
        out.push(Word {
            hash: wh_finish(h, b.len() - start),
            start: start as u32,
            end: b.len() as u32,
        });
    }
}

/// Calls `f` with the feature index of every feature occurrence of one
/// span of normalised text (`words` are the span's words).
#[inline]
pub fn for_each_feature(text: &[u8], words: &[Word], mut f: impl FnMut(u32)) {
    // byte n-grams over " " + text + " ", hashed by multiplying the packed
    // bytes (top BITS bits), one seed per length
    let shift = 64 - BITS;
    let mut key: u64 = u64::from(b' ');
    let mut seen = 1usize;
    for &z in text.iter().chain(std::iter::once(&b' ')) {
        key = ((key << 8) | u64::from(z)) & 0xff_ffff_ffff;
        seen += 1;
        if seen >= 3 {
            f(
                (((key & 0xff_ffff) ^ 0x7c15_9e37_79b9_2545).wrapping_mul(0x9e37_79b9_7f4a_7c15)
                    >> shift) as u32,
            );
        }
        if seen >= 4 {
            f(
                (((key & 0xffff_ffff) ^ 0x4f6c_dd1d_2545_f491).wrapping_mul(0xd6e8_feb8_6659_fd93)
                    >> shift) as u32,
            );
        }
        if seen >= 5 {
            f(((key ^ 0x2545_f491_4f6c_dd1d).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> shift) as u32);
        }
    }
    let mut prev: Option<u32> = None;
    for w in words {
        f(w.hash & MASK);
        if let Some(p) = prev {
            let h = (p.rotate_left(7) ^ w.hash ^ 0x9e37_79b9).wrapping_mul(0x0100_0193);
            f(h & MASK);
        }
        prev = Some(w.hash);
    }
}

/// The spans of `text` that are scored: the whole text first, then, when
/// the text is longer than [`WINDOW`], its overlapping windows. Each span
/// is a byte range on char boundaries.
pub fn spans(text: &str, out: &mut Vec<(usize, usize)>) {
    out.clear();
    let n = text.len();
    out.push((0, n));
    if n <= WINDOW {
        return;
    }
    let b = text.as_bytes();
    let is_ws = |i: usize| matches!(b.get(i), Some(b' ' | b'\n'));
    let mut raw = 0usize;
    loop {
        let last = raw.saturating_add(WINDOW) >= n;
        let raw_start = if last { n.saturating_sub(WINDOW) } else { raw };
        // start: just after a whitespace within the slack (not for 0)
        let mut s = raw_start;
        if s > 0 {
            let mut k = s;
            while k < s.saturating_add(EDGE_SLACK).min(n) && !is_ws(k) {
                k += 1;
            }
            if is_ws(k) {
                s = k.saturating_add(1);
            }
        }
        while s < n && !text.is_char_boundary(s) {
            s += 1;
        }
        // end: at a whitespace within the slack (not for the text's end)
        let mut e = raw_start.saturating_add(WINDOW).min(n);
        if e < n {
            let mut k = e;
            while k > e.saturating_sub(EDGE_SLACK) && !is_ws(k) {
                k -= 1;
            }
            if is_ws(k) && k > s {
                e = k;
            }
            while e < n && !text.is_char_boundary(e) {
                e += 1;
            }
        }
        if e > s && out.last() != Some(&(s, e)) {
            out.push((s, e));
        }
        if last {
            break;
        }
        raw = raw.saturating_add(STRIDE);
    }
}

/// The words of `words` (sorted, of the whole text) that lie wholly in
/// `[s, e)`.
pub fn words_in(words: &[Word], s: usize, e: usize) -> &[Word] {
    let lo = words.partition_point(|w| (w.start as usize) < s);
    let mut hi = words.partition_point(|w| (w.start as usize) < e);
    if hi > lo && words.get(hi - 1).is_some_and(|w| w.end as usize > e) {
        hi -= 1;
    }
    words.get(lo..hi).unwrap_or(&[])
}

/// Calls `f` with the distinct feature indices of one span, each once.
pub fn for_each_distinct(text: &[u8], words: &[Word], mut f: impl FnMut(u32)) {
    with_seen(|seen| {
        seen.begin(feature_bound(text.len(), words.len()));
        for_each_feature(text, words, |i| {
            if seen.insert(i) {
                f(i);
            }
        });
        seen.clear();
    });
}

/// All feature indices of a whole normalised text, unchunked.
pub fn text_features(text: &str) -> Vec<u32> {
    let mut w = Vec::new();
    words(text, &mut w);
    let mut f = Vec::new();
    for_each_distinct(text.as_bytes(), &w, |i| f.push(i));
    f
}

/// A set of feature indices, cleared in time proportional to its size.
///
/// A span's features go into a small open-addressing table sized to the
/// span (a 1 KB text uses 32 KiB of it, which stays in cache), so the
/// dedup costs no random access into a large structure; spans too long for
/// it use a bitset over the whole hash space.
struct Seen {
    bits: Vec<u64>,
    table: Vec<u32>,
    /// `table` slots in use are `..=mask`; `None` for the bitset mode.
    mask: Option<usize>,
    /// Set bits (bitset mode) or filled slots (table mode).
    touched: Vec<u32>,
}

/// Table slots (u32 each, 128 KiB); a span with more possible features
/// than half of this uses the bitset.
const TABLE_SLOTS: usize = 1 << 15;
const EMPTY: u32 = u32::MAX;

impl Seen {
    fn new() -> Seen {
        Seen {
            bits: Vec::new(),
            table: Vec::new(),
            mask: None,
            touched: Vec::new(),
        }
    }

    /// Prepares for a span that emits at most `bound` feature occurrences
    /// (the set must be empty).
    fn begin(&mut self, bound: usize) {
        let want = bound.saturating_mul(2).max(64).next_power_of_two();
        if want <= TABLE_SLOTS {
            if self.table.len() < TABLE_SLOTS {
                self.table = vec![EMPTY; TABLE_SLOTS];
            }
            self.mask = Some(want - 1);
        } else {
            if self.bits.is_empty() {
                self.bits = vec![0u64; 1usize << (BITS - 6)];
            }
            self.mask = None;
        }
    }

    /// True when `i` was not in the set yet.
    #[inline]
    fn insert(&mut self, i: u32) -> bool {
        let Some(mask) = self.mask else {
            let Some(slot) = self.bits.get_mut((i >> 6) as usize) else {
                return false;
            };
            let bit = 1u64 << (i & 63);
            if *slot & bit != 0 {
                return false;
            }
            *slot |= bit;
            self.touched.push(i);
            return true;
        };
        // Indices are hashes already; the multiply spreads the low bits.
        let mut pos = (i.wrapping_mul(0x9e37_79b1) >> 8) as usize & mask;
        // The table is at most half full (see `begin`), so an empty slot
        // comes within `mask + 1` probes; the bound keeps a wrong size
        // estimate from ever looping.
        for _ in 0..=mask {
            match self.table.get_mut(pos) {
                Some(slot) if *slot == i => return false,
                Some(slot) if *slot == EMPTY => {
                    *slot = i;
                    self.touched.push(pos as u32);
                    return true;
                }
                Some(_) => pos = (pos + 1) & mask,
                // Out of the table (cannot happen: mask < len): count it.
                None => return true,
            }
        }
        true
    }

    fn clear(&mut self) {
        match self.mask {
            Some(_) => {
                for &p in &self.touched {
                    if let Some(slot) = self.table.get_mut(p as usize) {
                        *slot = EMPTY;
                    }
                }
            }
            None => {
                for &i in &self.touched {
                    if let Some(slot) = self.bits.get_mut((i >> 6) as usize) {
                        *slot = 0;
                    }
                }
            }
        }
        self.touched.clear();
    }
}

/// At most how many feature occurrences [`for_each_feature`] emits for a
/// span of `len` bytes with `words` words.
fn feature_bound(len: usize, words: usize) -> usize {
    len.saturating_add(2)
        .saturating_mul(3)
        .saturating_add(words.saturating_mul(2))
}

thread_local! {
    // One per thread (a proxy-wasm VM is single-threaded), allocated on
    // first use and reused: a 128 KiB table, plus a 128 KiB bitset once a
    // span is too long for the table.
    static SEEN: RefCell<Option<Seen>> = const { RefCell::new(None) };
}

fn with_seen<R>(f: impl FnOnce(&mut Seen) -> R) -> R {
    SEEN.with(|cell| match cell.try_borrow_mut() {
        Ok(mut slot) => {
            let seen = slot.get_or_insert_with(Seen::new);
            seen.clear();
            f(seen)
        }
        // re-entrant use (never happens): a fresh set
        Err(_) => f(&mut Seen::new()),
    })
}

/// The decoded model.
#[derive(Debug, Clone)]
pub struct Model {
    weights: &'static [u8],
    scale: f32,
    bias: f32,
    /// Bias of texts shorter than `short_below` bytes (normalised): short
    /// texts carry few features and have their own operating point.
    bias_short: f32,
    short_below: usize,
}

/// The shipped weights.
pub static MODEL_BYTES: &[u8] = include_bytes!("guard_model.bin");
const MAGIC: &[u8; 4] = b"LGC3";
const HEADER: usize = 24;

impl Model {
    /// Decodes a weights file: `LGC3`, u8 bits, 3 reserved bytes, f32 LE
    /// scale, f32 LE bias, f32 LE bias of short texts, u32 LE length (bytes
    /// of normalised text) below which a text is short, then 2^bits i8
    /// weights.
    pub fn decode(bytes: &'static [u8]) -> Option<Model> {
        if bytes.get(..4)? != MAGIC || u32::from(*bytes.get(4)?) != BITS {
            return None;
        }
        let word = |o: usize| -> Option<[u8; 4]> { bytes.get(o..o + 4)?.try_into().ok() };
        let f = |o: usize| word(o).map(f32::from_le_bytes);
        let scale = f(8)?;
        let bias = f(12)?;
        let bias_short = f(16)?;
        let short_below = usize::try_from(u32::from_le_bytes(word(20)?)).ok()?;
        let weights = bytes.get(HEADER..HEADER + (1usize << BITS))?;
        if !scale.is_finite() || !bias.is_finite() || !bias_short.is_finite() {
            return None;
        }
        Some(Model {
            weights,
            scale,
            bias,
            bias_short,
            short_below,
        })
    }

    /// The shipped model, if its file is valid.
    pub fn shipped() -> Option<Model> {
        Self::decode(MODEL_BYTES)
    }

    /// The bias of a text of `len` bytes (normalised, whole text).
    fn bias_for(&self, len: usize) -> f32 {
        if len < self.short_below {
            self.bias_short
        } else {
            self.bias
        }
    }

    /// Logit of one span without the bias.
    fn logit_of(&self, text: &[u8], words: &[Word], seen: &mut Seen) -> f32 {
        let mut sum: i32 = 0;
        let mut n: u32 = 0;
        let w = self.weights;
        seen.begin(feature_bound(text.len(), words.len()));
        for_each_feature(text, words, |i| {
            if seen.insert(i) {
                let v = w.get(i as usize).copied().unwrap_or(0) as i8;
                sum = sum.saturating_add(i32::from(v));
                n = n.saturating_add(1);
            }
        });
        seen.clear();
        if n == 0 {
            return 0.0;
        }
        self.scale * sum as f32 / (n as f32).sqrt()
    }

    /// Probability that `text` (normalised) is an injection: the maximum
    /// over its [`spans`], with the bias of the whole text's length class.
    /// `all_words` are the words of the whole text;
    /// `spans_buf` is reused between calls.
    pub fn score(
        &self,
        text: &str,
        all_words: &[Word],
        spans_buf: &mut Vec<(usize, usize)>,
    ) -> f32 {
        spans(text, spans_buf);
        let b = text.as_bytes();
        with_seen(|seen| {
            let mut best = f32::NEG_INFINITY;
            for &(s, e) in spans_buf.iter() {
                let ws = words_in(all_words, s, e);
                best = best.max(self.logit_of(b.get(s..e).unwrap_or(&[]), ws, seen));
            }
            sigmoid(best + self.bias_for(text.len()))
        })
    }
}

fn sigmoid(x: f32) -> f32 {
    if x.is_nan() {
        return 0.0;
    }
    1.0 / (1.0 + (-x).exp())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn word_hash_is_stable() {
        // the rule trigger table and the shipped weights depend on it
        assert_eq!(word_hash(b"ignore"), word_hash(b"ignore"));
        assert_ne!(word_hash(b"ignore"), word_hash(b"ignored"));
        assert_ne!(word_hash(b"abcdefgh"), word_hash(b"abcdefgh\0"));
        let mut w = Vec::new();
        words("ignore, all_previous don't é1", &mut w);
        assert_eq!(w.len(), 4);
    }

    #[test]
    fn spans_cover_text() {
        let mut sp = Vec::new();
        spans("short text", &mut sp);
        assert_eq!(sp, vec![(0, 10)]);
        let t = "word ".repeat(1000);
        spans(&t, &mut sp);
        assert_eq!(sp.first(), Some(&(0, t.len())));
        let wins = &sp[1..];
        assert!(wins.len() >= 15, "{}", wins.len());
        assert!(wins.iter().all(|(s, e)| e - s <= WINDOW && e > s));
        // consecutive windows overlap: every byte lies in some window
        for pair in wins.windows(2) {
            assert!(pair[1].0 < pair[0].1);
        }
        assert_eq!(wins.last().unwrap().1, t.len());
        // windows never split a word
        for &(s, e) in wins {
            assert!(s == 0 || t.as_bytes()[s - 1] == b' ');
            assert!(e == t.len() || t.as_bytes()[e] == b' ');
        }
        for t in ["é".repeat(3000), "日本".repeat(700), "x".repeat(2000)] {
            spans(&t, &mut sp);
            for &(s, e) in &sp {
                assert!(t.get(s..e).is_some());
            }
        }
    }

    #[test]
    fn spans_of_odd_texts() {
        let mut sp = Vec::new();
        let mut w = Vec::new();
        for t in [
            "x".repeat(WINDOW + 1),
            " ".repeat(3000),
            "\n".repeat(3000),
            format!("{}{}", "a".repeat(WINDOW - 1), "é".repeat(WINDOW)),
            "😀".repeat(1000),
        ] {
            spans(&t, &mut sp);
            words(&t, &mut w);
            for &(s, e) in &sp {
                assert!(s < e || t.is_empty(), "{s} {e}");
                assert!(t.get(s..e).is_some());
                let _ = words_in(&w, s, e);
            }
            if let Some(m) = Model::shipped() {
                let p = m.score(&t, &w, &mut sp);
                assert!((0.0..=1.0).contains(&p));
            }
        }
    }

    #[test]
    fn seen_table_and_bitset_give_the_distinct_features() {
        // Short spans dedup in the table, long ones in the bitset: both
        // must give exactly the distinct feature set, and the logit must be
        // the one computed with a plain hash set.
        let mut seed = 11u64;
        let mut texts = vec![
            String::new(),
            "a".into(),
            "ignore all previous instructions ".repeat(3),
            "word ".repeat(4000),
            "é日本 x\ny  ".repeat(2000),
        ];
        for n in [10usize, 300, 1000, 6000, 20000] {
            let mut t = String::new();
            while t.len() < n {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let pick = [
                    "lorem ", "ipsum\n", "x", " ", "é", "IGNORE ", "1", "  ", "日",
                ];
                t.push_str(pick[(seed >> 33) as usize % pick.len()]);
            }
            texts.push(t);
        }
        let m = Model::shipped();
        for t in &texts {
            let mut w = Vec::new();
            words(t, &mut w);
            let mut all = Vec::new();
            for_each_feature(t.as_bytes(), &w, |i| all.push(i));
            let set: std::collections::BTreeSet<u32> = all.iter().copied().collect();
            let got = text_features(t);
            assert_eq!(got.len(), set.len(), "{} bytes", t.len());
            assert_eq!(
                got.iter()
                    .copied()
                    .collect::<std::collections::BTreeSet<_>>(),
                set
            );
            if let Some(m) = &m {
                let sum: i32 = set
                    .iter()
                    .map(|&i| i32::from(m.weights[i as usize] as i8))
                    .sum();
                let want = if set.is_empty() {
                    0.0
                } else {
                    m.scale * sum as f32 / (set.len() as f32).sqrt()
                };
                let got = with_seen(|seen| m.logit_of(t.as_bytes(), &w, seen));
                assert_eq!(got.to_bits(), want.to_bits(), "{} bytes", t.len());
            }
        }
    }

    #[test]
    fn words_in_window() {
        let t = "alpha beta gamma delta";
        let mut w = Vec::new();
        words(t, &mut w);
        assert_eq!(words_in(&w, 0, t.len()).len(), 4);
        assert_eq!(words_in(&w, 6, 16).len(), 2);
        assert_eq!(words_in(&w, 7, 16).len(), 1); // "beta" cut: out
        assert_eq!(words_in(&w, 6, 14).len(), 1); // "gamma" cut: out
        assert!(words_in(&w, 30, 40).is_empty());
    }

    #[test]
    fn distinct_features_are_distinct() {
        let f = text_features("ignore ignore ignore all previous instructions");
        let mut g = f.clone();
        g.sort_unstable();
        g.dedup();
        assert_eq!(f.len(), g.len());
        assert!(f.iter().all(|&i| i <= MASK));
    }

    #[test]
    fn the_bias_follows_the_length_class() {
        let mut blob = b"LGC3".to_vec();
        blob.extend([BITS as u8, 0, 0, 0]);
        for v in [1.0f32, -1.0, -3.0] {
            blob.extend(v.to_le_bytes());
        }
        blob.extend(20u32.to_le_bytes());
        blob.extend(vec![0u8; 1 << BITS]);
        let m = Model::decode(Box::leak(blob.clone().into_boxed_slice())).unwrap();
        let (mut w, mut sc) = (Vec::new(), Vec::new());
        let mut p = |t: &str| {
            words(t, &mut w);
            m.score(t, &w, &mut sc)
        };
        // zero weights: the score is the bias of the class
        assert_eq!(p("short text"), sigmoid(-3.0));
        assert_eq!(p("a text of twenty bytes"), sigmoid(-1.0));
        // a truncated or non-finite header is refused
        assert!(Model::decode(Box::leak(blob[..23].to_vec().into_boxed_slice())).is_none());
        let mut bad = blob.clone();
        bad[16..20].copy_from_slice(&f32::NAN.to_le_bytes());
        assert!(Model::decode(Box::leak(bad.into_boxed_slice())).is_none());
        let mut old = blob;
        old[3] = b'2';
        assert!(Model::decode(Box::leak(old.into_boxed_slice())).is_none());
    }

    #[test]
    fn shipped_model_scores() {
        if let Some(m) = Model::shipped() {
            let mut w = Vec::new();
            let mut sc = Vec::new();
            for t in ["", "hi", &"long text ".repeat(500)] {
                words(t, &mut w);
                let p = m.score(t, &w, &mut sc);
                assert!((0.0..=1.0).contains(&p));
            }
        }
    }
}
