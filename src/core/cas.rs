//! The one compare-and-swap loop over a proxy-wasm shared-data key, used by
//! budgets and the breaker: read the value and its token, decode it, let the
//! caller decide, write back with the token read, retry on a conflict.

use crate::core::host::{SharedStore, StoreError};

/// Kind of a shared-data failure, for a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StoreFailureKind {
    /// The host returned an error.
    Unavailable,
    /// Every CAS attempt lost against other writers.
    RetriesExhausted,
    /// The stored value did not parse (it has been reset).
    Corrupt,
    /// The key does not exist (it is created only at plugin start).
    Missing,
    /// The value is at its capacity (a bucket holds its maximum of scopes).
    Full,
}

impl StoreFailureKind {
    pub fn as_str(self) -> &'static str {
        match self {
            StoreFailureKind::Unavailable => "unavailable",
            StoreFailureKind::RetriesExhausted => "retries_exhausted",
            StoreFailureKind::Corrupt => "corrupt",
            StoreFailureKind::Missing => "missing",
            StoreFailureKind::Full => "full",
        }
    }
}

/// What the caller decided about the decoded value.
pub enum Cas<S, T, E> {
    /// Return `T` without writing.
    Done(T),
    /// Write `S` (with the token read), then return `T`.
    Write(S, T),
    /// Stop without writing.
    Abort(E),
}

/// Why the loop stopped without a result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CasError<E> {
    Store(StoreFailureKind),
    Abort(E),
}

/// The CAS loop over `key`: `retries + 1` attempts. A value that does not
/// decode is reset to `reset` (CAS on the token just read, so later requests
/// work) and reported `Corrupt`; a missing key is `Missing` (keys are
/// created at plugin start, never on the request path).
pub fn cas_loop<S, T, E>(
    store: &dyn SharedStore,
    key: &str,
    retries: u32,
    reset: &[u8],
    decode: impl Fn(&[u8]) -> Option<S>,
    encode: impl Fn(&S) -> Option<Vec<u8>>,
    mut decide: impl FnMut(S) -> Cas<S, T, E>,
) -> Result<T, CasError<E>> {
    let mut attempts = retries.saturating_add(1);
    while attempts > 0 {
        attempts = attempts.saturating_sub(1);
        let (value, cas) = match store.get(key) {
            Ok(Some(v)) => v,
            Ok(None) => return Err(CasError::Store(StoreFailureKind::Missing)),
            Err(_) => return Err(CasError::Store(StoreFailureKind::Unavailable)),
        };
        let Some(state) = decode(&value) else {
            let _ = store.set(key, reset, Some(cas));
            return Err(CasError::Store(StoreFailureKind::Corrupt));
        };
        let (new, out) = match decide(state) {
            Cas::Done(out) => return Ok(out),
            Cas::Abort(e) => return Err(CasError::Abort(e)),
            Cas::Write(new, out) => (new, out),
        };
        let Some(bytes) = encode(&new) else {
            return Err(CasError::Store(StoreFailureKind::Corrupt));
        };
        match store.set(key, &bytes, Some(cas)) {
            Ok(()) => return Ok(out),
            Err(StoreError::CasMismatch) => continue,
            Err(StoreError::Unavailable) => {
                return Err(CasError::Store(StoreFailureKind::Unavailable))
            }
        }
    }
    Err(CasError::Store(StoreFailureKind::RetriesExhausted))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::host::FakeStore;

    fn counter(store: &FakeStore, retries: u32) -> Result<u64, CasError<()>> {
        cas_loop(
            store,
            "k",
            retries,
            b"0",
            |v| std::str::from_utf8(v).ok()?.parse::<u64>().ok(),
            |n| Some(n.to_string().into_bytes()),
            |n| Cas::Write(n + 1, n + 1),
        )
    }

    #[test]
    fn writes_retries_and_reports() {
        let store = FakeStore::new();
        assert_eq!(
            counter(&store, 1),
            Err(CasError::Store(StoreFailureKind::Missing))
        );
        store.set("k", b"0", None).unwrap();
        assert_eq!(counter(&store, 1), Ok(1));
        store.inject_conflicts(1);
        assert_eq!(counter(&store, 1), Ok(2));
        store.inject_conflicts(2);
        assert_eq!(
            counter(&store, 1),
            Err(CasError::Store(StoreFailureKind::RetriesExhausted))
        );
        store.set("k", b"junk", None).unwrap();
        assert_eq!(
            counter(&store, 1),
            Err(CasError::Store(StoreFailureKind::Corrupt))
        );
        assert_eq!(store.raw("k").as_deref(), Some(&b"0"[..]));
        store.inject_failures(1);
        assert_eq!(
            counter(&store, 1),
            Err(CasError::Store(StoreFailureKind::Unavailable))
        );
    }
}
