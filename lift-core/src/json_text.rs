//! JSON written as text, for the lines Lift writes on every invocation (EMF documents, log
//! lines): strings escaped as RFC 8259 requires, numbers without the formatter.

use std::fmt;

/// Appends `value` as a JSON string: copied in runs between the characters that need
/// escaping (`"`, `\`, control characters), which are escaped.
pub(crate) fn push_str(out: &mut String, value: &str) {
    out.push('"');
    push_escaped(out, value);
    out.push('"');
}

/// Appends the inside of a JSON string: `value` escaped, without the quotes. Runs that
/// need no escaping (nearly all text) are found eight bytes at a time and copied whole.
fn push_escaped(out: &mut String, value: &str) {
    let bytes = value.as_bytes();
    let (mut copied, mut at) = (0, 0);
    while at < bytes.len() {
        if let Some(word) = bytes
            .get(at..at + 8)
            .and_then(|w| <[u8; 8]>::try_from(w).ok())
            && !needs_escape(u64::from_le_bytes(word))
        {
            at += 8;
            continue;
        }
        let escape = match bytes[at] {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x08 => "\\b",
            0x0c => "\\f",
            0x00..=0x1f => "",
            _ => {
                at += 1;
                continue;
            }
        };
        out.push_str(&value[copied..at]);
        if escape.is_empty() {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.push_str("\\u00");
            out.push(char::from(HEX[usize::from(bytes[at] >> 4)]));
            out.push(char::from(HEX[usize::from(bytes[at] & 0xf)]));
        } else {
            out.push_str(escape);
        }
        at += 1;
        copied = at;
    }
    out.push_str(&value[copied..]);
}

/// Whether any of the eight bytes in `word` is `"`, `\` or a control character: the
/// zero-byte test of "Bit Twiddling Hacks" on `word ^ '"'` and `word ^ '\'`, and its
/// less-than variant for bytes under 0x20. Exact for the word as a whole.
fn needs_escape(word: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let zero = |v: u64| v.wrapping_sub(ONES) & !v & HIGH;
    let quote = zero(word ^ (ONES * u64::from(b'"')));
    let backslash = zero(word ^ (ONES * u64::from(b'\\')));
    let control = word.wrapping_sub(ONES * 0x20) & !word & HIGH;
    quote | backslash | control != 0
}

/// Appends an `f64` (`1.0`, `0.25`, `1e-7`); `null` for NaN and the infinities, which
/// JSON cannot hold.
pub(crate) fn push_f64(out: &mut String, value: f64) {
    // Counts are whole numbers: written as integers are, then `.0`, as a float prints.
    if value.fract() == 0.0 && value.abs() < 1e15 {
        push_int(out, value as i64);
        out.push_str(".0");
    } else if let Some(thousandths) = thousandths(value) {
        // Milliseconds to the microsecond: the integer part, then up to three digits.
        if thousandths < 0 {
            out.push('-');
        }
        let magnitude = thousandths.unsigned_abs();
        push_int(out, magnitude / 1000);
        let digits = [
            b'.',
            digit(magnitude / 100),
            digit(magnitude / 10),
            digit(magnitude),
        ];
        let fraction = std::str::from_utf8(&digits).unwrap_or_default();
        out.push_str(fraction.trim_end_matches('0'));
    } else if value.is_finite() {
        out.push_str(ryu::Buffer::new().format_finite(value));
    } else {
        out.push_str("null");
    }
}

/// `value` as a whole number of thousandths, when that decimal reads back as exactly
/// `value`: `m / 1000.0` is the float nearest the decimal `m/1000`, which is what parsing
/// the decimal gives.
fn thousandths(value: f64) -> Option<i64> {
    let scaled = (value * 1000.0).round();
    (scaled.abs() < 1e15 && scaled / 1000.0 == value).then_some(scaled as i64)
}

/// The last decimal digit of `n`, as ASCII.
fn digit(n: u64) -> u8 {
    b'0' + (n % 10) as u8
}

/// Appends an integer.
pub(crate) fn push_int(out: &mut String, value: impl itoa::Integer) {
    out.push_str(itoa::Buffer::new().format(value));
}

/// A `fmt::Write` that escapes what is written into it: `Debug` and `Display` output goes
/// into a JSON string without an intermediate `String`.
pub(crate) struct Escaped<'a>(pub(crate) &'a mut String);

impl fmt::Write for Escaped<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        push_escaped(self.0, s);
        Ok(())
    }
}

/// Appends `value`'s `Display` (or, through `format_args!`, any formatting) as a JSON
/// string.
pub(crate) fn push_display(out: &mut String, value: fmt::Arguments<'_>) {
    out.push('"');
    // Writing into a `String` cannot fail.
    let _ = fmt::write(&mut Escaped(out), value);
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_read_back_as_written() {
        for text in [
            "",
            "plain",
            "q\"uote and back\\slash",
            "lines\nand\rtabs\t\u{8}\u{c}",
            "\u{0}\u{1}\u{1f}\u{7f}",
            "é ü 中文 🎉",
            "\"",
            "end\\",
            "a long run of plain text, then a \"quote\" and more plain text after it",
            "eight!!!\n",
            "ünïcödé text longer than eight bytes\u{1f}",
        ] {
            let mut out = String::new();
            push_str(&mut out, text);
            assert_eq!(serde_json::from_str::<String>(&out).expect(&out), text);
            assert_eq!(out, serde_json::to_string(text).expect("json"), "{text:?}");
        }
    }

    #[test]
    fn every_byte_is_escaped_or_not_as_json_requires_at_every_offset() {
        for byte in 0u8..0x80 {
            for offset in 0..9 {
                let text = format!(
                    "{}{}{}",
                    "x".repeat(offset),
                    char::from(byte),
                    "y".repeat(9)
                );
                let mut out = String::new();
                push_str(&mut out, &text);
                assert_eq!(
                    out,
                    serde_json::to_string(&text).expect("json"),
                    "{byte:#x}"
                );
            }
        }
    }

    #[test]
    fn formatted_text_is_escaped_too() {
        let mut out = String::new();
        push_display(&mut out, format_args!("{:?}", "a\"b"));
        assert_eq!(
            serde_json::from_str::<String>(&out).expect(&out),
            "\"a\\\"b\""
        );
    }

    #[test]
    fn numbers_read_back_as_written() {
        for value in [
            0.0,
            -0.0,
            1.0,
            -7.0,
            999_999_999_999_999.0,
            1e15,
            -2.5,
            0.1,
            1e-7,
            12.345,
            1e21,
            f64::MAX,
        ] {
            let mut out = String::new();
            push_f64(&mut out, value);
            assert_eq!(serde_json::from_str::<f64>(&out).expect(&out), value);
        }
        // Thousandths are written without the float formatter, and read back the same.
        for (value, text) in [
            (0.05, "0.05"),
            (-0.001, "-0.001"),
            (12.3, "12.3"),
            (1234.567, "1234.567"),
            (0.000_5, "0.0005"),
        ] {
            let mut out = String::new();
            push_f64(&mut out, value);
            assert_eq!(out, text);
        }
        let mut values: Vec<f64> = (0..20_000_u32)
            .map(|micros| f64::from(micros) / 1000.0)
            .collect();
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        for _ in 0..2_000 {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            values.push((seed >> 12) as f64 / 1000.0);
            values.push(f64::from_bits(seed));
        }
        // Read back exactly (serde_json's own parser may be off by one ulp without its
        // `float_roundtrip` feature), and JSON numbers.
        for value in values.into_iter().filter(|v| v.is_finite()) {
            let mut out = String::new();
            push_f64(&mut out, value);
            assert_eq!(out.parse::<f64>().expect(&out), value, "{out}");
            assert!(
                serde_json::from_str::<serde_json::Number>(&out).is_ok(),
                "{out}"
            );
        }
        let mut out = String::new();
        push_f64(&mut out, f64::NAN);
        push_int(&mut out, -42_i64);
        push_int(&mut out, u64::MAX);
        assert_eq!(out, format!("null-42{}", u64::MAX));
    }
}
