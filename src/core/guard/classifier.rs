//! The learned injection classifier: logistic regression over hashed
//! features of the normalised text, trained offline by
//! `scripts/train_guard.py`, weights shipped in `guard_model.bin`.
//!
//! Features (hashed into 2^BITS buckets):
//! - byte 5-grams of `" " + text + " "` (multiplicative hash of the packed
//!   bytes);
//! - word unigrams ([`word_hash`]) and bigrams (the two word hashes mixed),
//!   words being maximal runs of ASCII alphanumerics, `_`, `'` and
//!   non-ASCII bytes.
//!
//! Features are binary: each distinct feature of a chunk adds 1/sqrt(N)
//! (N = distinct features in the chunk), so logit = bias + scale *
//! sum(w[i]) / sqrt(N) over distinct i; repetition alone cannot raise it. Texts longer than
//! [`CHUNK`] bytes are scored in chunks (split at whitespace) and the
//! maximum is kept, so an injection inside a long document is not diluted.
//!
//! The training script does not re-implement any of this: it asks the Rust
//! code (`guard_report --features`) for the feature indices of every text,
//! so training and serving cannot drift apart.

/// Hash space: 2^BITS weights.
pub const BITS: u32 = 17;
const MASK: u32 = (1 << BITS) - 1;
/// Chunk size in bytes of normalised text. Texts longer than two chunks
/// are classified on their first two chunks and their last one only (a cost
/// cap: the rules still see the whole text).
pub const CHUNK: usize = 1024;

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
/// chunk of normalised text (`words` are the chunk's words, offsets relative
/// to the chunk).
#[inline]
pub fn for_each_feature(text: &[u8], words: &[Word], mut f: impl FnMut(u32)) {
    // byte 5-grams over " " + text + " ", hashed by multiplying the packed
    // bytes (top BITS bits)
    let shift = 64 - BITS;
    let mut key: u64 = u64::from(b' ');
    let mut seen = 1usize;
    for &z in text.iter().chain(std::iter::once(&b' ')) {
        key = ((key << 8) | u64::from(z)) & 0xff_ffff_ffff;
        seen += 1;
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

/// Appends the feature indices of one chunk of normalised text.
pub fn chunk_features(text: &[u8], words: &[Word], out: &mut Vec<u32>) {
    for_each_feature(text, words, |i| out.push(i));
}

/// Byte ranges of the chunks of `text` (split at whitespace, ≤ CHUNK bytes
/// where possible).
pub fn chunks(text: &str) -> Vec<(usize, usize)> {
    let b = text.as_bytes();
    let mut out = Vec::new();
    let mut s = 0usize;
    while s < b.len() {
        let mut e = (s + CHUNK).min(b.len());
        if e < b.len() {
            // back off to whitespace
            let mut k = e;
            while k > s + CHUNK / 2 && !matches!(b.get(k), Some(b' ' | b'\n')) {
                k -= 1;
            }
            if k > s + CHUNK / 2 {
                e = k;
            }
            while e < b.len() && !text.is_char_boundary(e) {
                e += 1;
            }
        }
        out.push((s, e));
        s = e;
        while matches!(b.get(s), Some(b' ' | b'\n')) {
            s += 1;
        }
    }
    out
}

/// All feature indices of a whole normalised text, unchunked (training).
pub fn text_features(text: &str) -> Vec<u32> {
    let mut w = Vec::new();
    words(text, &mut w);
    let mut f = Vec::new();
    chunk_features(text.as_bytes(), &w, &mut f);
    f
}

/// The decoded model.
#[derive(Debug, Clone)]
pub struct Model {
    weights: &'static [u8],
    scale: f32,
    bias: f32,
}

/// The shipped weights.
pub static MODEL_BYTES: &[u8] = include_bytes!("guard_model.bin");
const MAGIC: &[u8; 4] = b"LGC1";

impl Model {
    /// Decodes a weights file: `LGC1`, u8 bits, 3 reserved bytes, f32 LE
    /// scale, f32 LE bias, then 2^bits i8 weights.
    pub fn decode(bytes: &'static [u8]) -> Option<Model> {
        if bytes.get(..4)? != MAGIC || u32::from(*bytes.get(4)?) != BITS {
            return None;
        }
        let f = |o: usize| -> Option<f32> {
            let s: [u8; 4] = bytes.get(o..o + 4)?.try_into().ok()?;
            Some(f32::from_le_bytes(s))
        };
        let scale = f(8)?;
        let bias = f(12)?;
        let weights = bytes.get(16..16 + (1usize << BITS))?;
        if !scale.is_finite() || !bias.is_finite() {
            return None;
        }
        Some(Model {
            weights,
            scale,
            bias,
        })
    }

    /// The shipped model, if its file is valid.
    pub fn shipped() -> Option<Model> {
        Self::decode(MODEL_BYTES)
    }

    fn logit_of(&self, text: &[u8], words: &[Word]) -> f32 {
        let mut sum: i32 = 0;
        let mut n: u32 = 0;
        let w = self.weights;
        // Each distinct feature counts once (binary features, L2-normalised
        // by the number of distinct features): a repeated word or n-gram
        // cannot push the score up by repetition alone.
        let mut seen = vec![0u64; 1 << (BITS - 6)];
        for_each_feature(text, words, |i| {
            let word = (i >> 6) as usize;
            let bit = 1u64 << (i & 63);
            let Some(slot) = seen.get_mut(word) else {
                return;
            };
            if *slot & bit != 0 {
                return;
            }
            *slot |= bit;
            let v = w.get(i as usize).copied().unwrap_or(0) as i8;
            sum = sum.saturating_add(i32::from(v));
            n = n.saturating_add(1);
        });
        if n == 0 {
            return self.bias;
        }
        self.bias + self.scale * sum as f32 / (n as f32).sqrt()
    }

    /// Probability that `text` (normalised) is an injection: the maximum
    /// over its chunks. `words` are the words of the whole text; `scratch`
    /// is reused between calls.
    pub fn score(&self, text: &str, all_words: &[Word], _scratch: &mut Vec<u32>) -> f32 {
        let b = text.as_bytes();
        let mut best = f32::NEG_INFINITY;
        if b.len() <= CHUNK {
            best = self.logit_of(b, all_words);
        } else {
            let mut wi = 0usize;
            let mut local: Vec<Word> = Vec::new();
            let all = chunks(text);
            let n = all.len();
            for (k, &(s, e)) in all.iter().enumerate() {
                // cost cap: the first two chunks and the last one
                if k >= 2 && k + 1 < n {
                    continue;
                }
                local.clear();
                while let Some(w) = all_words.get(wi) {
                    if (w.start as usize) >= e {
                        break;
                    }
                    if (w.start as usize) >= s {
                        local.push(Word {
                            hash: w.hash,
                            start: w.start - s as u32,
                            end: w.end.min(e as u32) - s as u32,
                        });
                    }
                    wi += 1;
                }
                best = best.max(self.logit_of(b.get(s..e).unwrap_or(&[]), &local));
            }
        }
        sigmoid(best)
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
    fn chunking_covers_text() {
        let t = "word ".repeat(1000);
        let c = chunks(&t);
        assert!(c.len() >= 4);
        assert!(c.iter().all(|(s, e)| e - s <= CHUNK + 4));
        let t = "é".repeat(3000);
        for (s, e) in chunks(&t) {
            assert!(t.get(s..e).is_some());
        }
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
