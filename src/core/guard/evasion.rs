//! Evasion transformations of a text (test and report support, not filter
//! code): the guard's unit tests and `make guard-report` apply the same
//! ones, so the report's evasion table measures what the tests pin.

/// The transformations, by name, in report order.
pub const KINDS: &[&str] = &[
    "plain",
    "uppercase",
    "base64",
    "letter_spaced",
    "leetspeak",
    "homoglyph",
    "zero_width",
    "fullwidth",
];

/// `t` under the transformation `kind` (unknown kinds leave it as is).
pub fn apply(kind: &str, t: &str) -> String {
    match kind {
        "uppercase" => t.to_uppercase(),
        "base64" => base64(t.as_bytes()),
        "letter_spaced" => letter_spaced(t),
        "leetspeak" => leetspeak(t),
        "homoglyph" => homoglyph(t),
        "zero_width" => zero_width(t),
        "fullwidth" => fullwidth(t),
        _ => t.to_string(),
    }
}

/// Standard base64 with padding.
pub fn base64(data: &[u8]) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in data.chunks(3) {
        let byte = |i: usize| u32::from(c.get(i).copied().unwrap_or(0));
        let n = (byte(0) << 16) | (byte(1) << 8) | byte(2);
        for k in 0..4usize {
            if k <= c.len() {
                let i = ((n >> (18 - 6 * k)) & 63) as usize;
                out.push(char::from(A.get(i).copied().unwrap_or(b'A')));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Every character followed by a space (`i g n o r e`).
pub fn letter_spaced(t: &str) -> String {
    t.chars()
        .map(|c| c.to_string())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Lowercased, with a→4, e→3, i→1, o→0, s→5, t→7.
pub fn leetspeak(t: &str) -> String {
    t.to_lowercase()
        .chars()
        .map(|c| match c {
            'a' => '4',
            'e' => '3',
            'i' => '1',
            'o' => '0',
            's' => '5',
            't' => '7',
            c => c,
        })
        .collect()
}

/// Latin a, e, o, p, c, x replaced by their Cyrillic look-alikes.
pub fn homoglyph(t: &str) -> String {
    t.chars()
        .map(|c| match c {
            'a' => '\u{0430}',
            'e' => '\u{0435}',
            'o' => '\u{043E}',
            'p' => '\u{0440}',
            'c' => '\u{0441}',
            'x' => '\u{0445}',
            c => c,
        })
        .collect()
}

/// A zero-width space between adjacent alphanumerics.
pub fn zero_width(t: &str) -> String {
    let mut o = String::new();
    let mut prev_alpha = false;
    for c in t.chars() {
        if prev_alpha && c.is_alphanumeric() {
            o.push('\u{200B}');
        }
        o.push(c);
        prev_alpha = c.is_alphanumeric();
    }
    o
}

/// Printable ASCII as fullwidth forms.
pub fn fullwidth(t: &str) -> String {
    t.chars()
        .map(|c| {
            if ('!'..='~').contains(&c) {
                char::from_u32(c as u32 + 0xFEE0).unwrap_or(c)
            } else {
                c
            }
        })
        .collect()
}
