//! The paired sign test used by `eval --compare`.

/// Two-sided exact sign test: `n` non-tied pairs, `k` of them favouring one
/// side. p = min(1, 2 · P(X ≤ min(k, n−k))) with X ~ Binomial(n, 1/2).
/// `n = 0` gives 1.
pub fn sign_test_p(n: u64, k: u64) -> f64 {
    if n == 0 || k > n {
        return 1.0;
    }
    let m = k.min(n - k);
    // Sum the binomial pmf in log space: no overflow or underflow for large n.
    let ln_half_n = n as f64 * 0.5f64.ln();
    let mut ln_c = 0.0f64; // ln C(n, 0)
    let mut tail = 0.0f64;
    for i in 0..=m {
        if i > 0 {
            ln_c += ((n - i + 1) as f64).ln() - (i as f64).ln();
        }
        tail += (ln_c + ln_half_n).exp();
    }
    (2.0 * tail).min(1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-4
    }

    #[test]
    fn known_values() {
        // n=10, k=9: 2 * (1 + 10) / 1024.
        assert!(close(sign_test_p(10, 9), 0.021484375));
        assert!(close(sign_test_p(10, 1), 0.021484375));
        assert!(close(sign_test_p(10, 10), 2.0 / 1024.0));
        assert!(close(sign_test_p(10, 5), 1.0));
        // n=5, k=5: 2/32.
        assert!(close(sign_test_p(5, 5), 0.0625));
        // n=3, k=3: 2/8.
        assert!(close(sign_test_p(3, 3), 0.25));
        // n=20, k=15: 2 * P(X<=5) = 2 * 21700/1048576.
        assert!(close(sign_test_p(20, 15), 0.041389465));
        assert_eq!(sign_test_p(0, 0), 1.0);
        assert_eq!(sign_test_p(1, 1), 1.0);
    }

    #[test]
    fn large_n_is_finite() {
        let p = sign_test_p(5000, 2600);
        assert!(p > 0.0 && p < 1.0, "{p}");
        let p = sign_test_p(5000, 5000);
        assert!((0.0..1e-300).contains(&p), "{p}");
    }
}
