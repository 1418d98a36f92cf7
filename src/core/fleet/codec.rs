//! Binary form of a scope's shared-data record: read and written on every
//! admission and settlement, so it must cost far less than JSON (a record
//! with five leases is ~500 bytes of JSON; parsing and re-serialising it
//! twice per request per scope was most of fleet mode's added latency).
//!
//! Layout (integers little-endian): `0xF1 0x01` (magic, version), `n`
//! (u64), `fu` (u64), the leases (`u8` count; each: `u8` code length, code,
//! `w b` u64, `u` i64, `x` u64, `r` flag u8 + u64, `t q fb ex dt` u64), the
//! old leases (`u8` count; code, `w` u64, `u` i64), the flight (`u8` flag;
//! `id` u64, `gb` u8, `s d` u64, `u8` item count; each: code, `w` u64,
//! `rep` i64, `need` u64, `a` u8, `lim` u64, `old` u8). Anything that does
//! not parse exactly (truncated, trailing bytes, bad UTF-8) is `None`: the
//! caller starts from an empty record, as for unreadable JSON.

use super::{Flight, FlightItem, Lease, OldLease, ScopeRecord};

const MAGIC: u8 = 0xF1;
const VERSION: u8 = 1;

/// Whether `bytes` is the binary form (else: JSON, written by an older
/// version or the initial `{}`).
pub(super) fn is_binary(bytes: &[u8]) -> bool {
    bytes.first() == Some(&MAGIC)
}

struct W(Vec<u8>);

impl W {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn i64(&mut self, v: i64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn str(&mut self, s: &str) {
        // Codes are short limit codes; longer ones are cut (and then fail
        // to decode, which only resets the record).
        let b = s.as_bytes();
        let n = u8::try_from(b.len()).unwrap_or(u8::MAX);
        self.u8(n);
        self.0
            .extend_from_slice(b.get(..usize::from(n)).unwrap_or_default());
    }
    fn count(&mut self, n: usize) {
        self.u8(u8::try_from(n).unwrap_or(u8::MAX));
    }
}

struct R<'a>(&'a [u8]);

impl<'a> R<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = (self.0.get(..n)?, self.0.get(n..)?);
        self.0 = rest;
        Some(head)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1)?.first().copied()
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    fn i64(&mut self) -> Option<i64> {
        Some(i64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    fn str(&mut self) -> Option<String> {
        let n = usize::from(self.u8()?);
        String::from_utf8(self.take(n)?.to_vec()).ok()
    }
}

pub(super) fn encode(rec: &ScopeRecord) -> Vec<u8> {
    let mut w = W(Vec::with_capacity(32 + rec.l.len() * 96));
    w.u8(MAGIC);
    w.u8(VERSION);
    w.u64(rec.n);
    w.u64(rec.fu);
    // At most 255 of each (a scope has at most five limits).
    w.count(rec.l.len());
    for (code, l) in rec.l.iter().take(255) {
        w.str(code);
        w.u64(l.w);
        w.u64(l.b);
        w.i64(l.u);
        w.u64(l.x);
        match l.r {
            Some(r) => {
                w.u8(1);
                w.u64(r);
            }
            None => {
                w.u8(0);
                w.u64(0);
            }
        }
        w.u64(l.t);
        w.u64(l.q);
        w.u64(l.fb);
        w.u64(l.ex);
        w.u64(l.dt);
    }
    w.count(rec.o.len());
    for (code, o) in rec.o.iter().take(255) {
        w.str(code);
        w.u64(o.w);
        w.i64(o.u);
    }
    match &rec.f {
        None => w.u8(0),
        Some(f) => {
            w.u8(1);
            w.u64(f.id);
            w.u8(u8::from(f.gb));
            w.u64(f.s);
            w.u64(f.d);
            w.count(f.i.len());
            for it in f.i.iter().take(255) {
                w.str(&it.c);
                w.u64(it.w);
                w.i64(it.rep);
                w.u64(it.need);
                w.u8(u8::from(it.a));
                w.u64(it.lim);
                w.u8(u8::from(it.old));
            }
        }
    }
    w.0
}

pub(super) fn decode(bytes: &[u8]) -> Option<ScopeRecord> {
    let mut r = R(bytes);
    if r.u8()? != MAGIC || r.u8()? != VERSION {
        return None;
    }
    let mut rec = ScopeRecord {
        n: r.u64()?,
        fu: r.u64()?,
        ..ScopeRecord::default()
    };
    for _ in 0..r.u8()? {
        let code = r.str()?;
        let w = r.u64()?;
        let b = r.u64()?;
        let u = r.i64()?;
        let x = r.u64()?;
        let has_r = r.u8()?;
        let rv = r.u64()?;
        let lease = Lease {
            w,
            b,
            u,
            x,
            r: (has_r == 1).then_some(rv),
            t: r.u64()?,
            q: r.u64()?,
            fb: r.u64()?,
            ex: r.u64()?,
            dt: r.u64()?,
        };
        rec.l.insert(code, lease);
    }
    for _ in 0..r.u8()? {
        let code = r.str()?;
        let o = OldLease {
            w: r.u64()?,
            u: r.i64()?,
        };
        rec.o.insert(code, o);
    }
    if r.u8()? == 1 {
        let id = r.u64()?;
        let gb = r.u8()? == 1;
        let s = r.u64()?;
        let d = r.u64()?;
        let mut items = Vec::new();
        for _ in 0..r.u8()? {
            items.push(FlightItem {
                c: r.str()?,
                w: r.u64()?,
                rep: r.i64()?,
                need: r.u64()?,
                a: r.u8()? == 1,
                lim: r.u64()?,
                old: r.u8()? == 1,
            });
        }
        rec.f = Some(Flight {
            id,
            gb,
            s,
            d,
            i: items,
        });
    }
    if !r.0.is_empty() {
        return None;
    }
    Some(rec)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;
    use std::collections::BTreeMap;

    pub(super) fn sample() -> ScopeRecord {
        let mut l = BTreeMap::new();
        for (i, code) in ["rpm", "tpm", "tpd", "usdd", "usdm"].iter().enumerate() {
            l.insert(
                code.to_string(),
                Lease {
                    w: 29_000_000 + i as u64,
                    b: 123_456,
                    u: -42,
                    x: 1_704_067_230_000,
                    r: if i % 2 == 0 { Some(999) } else { None },
                    t: 1_704_067_210_000,
                    q: 1_704_067_200_000,
                    fb: 7,
                    ex: 0,
                    dt: 3,
                },
            );
        }
        let mut o = BTreeMap::new();
        o.insert(
            "tpm".to_string(),
            OldLease {
                w: 28_999_999,
                u: 17,
            },
        );
        ScopeRecord {
            l,
            o,
            f: Some(Flight {
                id: 9,
                gb: false,
                s: 1,
                d: 2,
                i: vec![FlightItem {
                    c: "tpm".into(),
                    w: 3,
                    rep: -4,
                    need: 5,
                    a: true,
                    lim: 6,
                    old: false,
                }],
            }),
            n: 10,
            fu: 11,
        }
    }

    #[test]
    fn round_trips() {
        let rec = sample();
        let bytes = encode(&rec);
        assert!(is_binary(&bytes));
        assert_eq!(decode(&bytes), Some(rec));
        let empty = ScopeRecord::default();
        assert_eq!(decode(&encode(&empty)), Some(empty));
    }

    #[test]
    fn every_truncation_and_trailing_garbage_is_none_never_a_panic() {
        let bytes = encode(&sample());
        for n in 0..bytes.len() {
            assert_eq!(decode(&bytes[..n]), None, "truncated at {n}");
        }
        let mut more = bytes.clone();
        more.push(0);
        assert_eq!(decode(&more), None);
        let mut bad = bytes;
        bad[1] = 2;
        assert_eq!(decode(&bad), None, "another version");
        assert_eq!(decode(b"{}"), None);
        for seed in 0u64..2000 {
            let junk: Vec<u8> = (0..(seed % 97))
                .map(|i| (seed.wrapping_mul(31).wrapping_add(i * 7) % 256) as u8)
                .collect();
            let mut j = vec![MAGIC, VERSION];
            j.extend(junk);
            let _ = decode(&j);
        }
    }
}

#[cfg(test)]
fn tests_sample() -> ScopeRecord {
    tests::sample()
}

#[cfg(test)]
mod timing {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// `cargo test --release --lib codec::timing -- --ignored --nocapture`
    #[test]
    #[ignore]
    fn binary_versus_json() {
        let rec = super::tests_sample();
        let json = serde_json::to_vec(&rec).unwrap();
        let bin = encode(&rec);
        let n = 100_000;
        let t = std::time::Instant::now();
        for _ in 0..n {
            let r: ScopeRecord = serde_json::from_slice(std::hint::black_box(&json)).unwrap();
            std::hint::black_box(serde_json::to_vec(&r).unwrap());
        }
        let tj = t.elapsed() / n;
        let t = std::time::Instant::now();
        for _ in 0..n {
            let r = decode(std::hint::black_box(&bin)).unwrap();
            std::hint::black_box(encode(&r));
        }
        let tb = t.elapsed() / n;
        println!(
            "json {} bytes {tj:?}/round trip; binary {} bytes {tb:?}",
            json.len(),
            bin.len()
        );
    }
}
