//! Kubernetes resource quantities.

/// A Kubernetes CPU quantity in millicores: `250m`, `1`, `0.5`, `2.5`, `1500000u`, `1k`.
pub fn cpu_millicores(quantity: &str) -> Option<f64> {
    let q = quantity.trim();
    let (number, scale) = match q.char_indices().find(|(_, c)| c.is_ascii_alphabetic()) {
        None => (q, 1000.0),
        Some((i, _)) => {
            let scale = match &q[i..] {
                "n" => 1e-6,
                "u" => 1e-3,
                "m" => 1.0,
                "k" => 1e6,
                "M" => 1e9,
                "G" => 1e12,
                _ => return None,
            };
            (&q[..i], scale)
        }
    };
    let value: f64 = number.parse().ok()?;
    (value.is_finite() && value >= 0.0).then_some(value * scale)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities() {
        assert_eq!(cpu_millicores("250m"), Some(250.0));
        assert_eq!(cpu_millicores("1"), Some(1000.0));
        assert_eq!(cpu_millicores("0.5"), Some(500.0));
        assert_eq!(cpu_millicores("1500000u"), Some(1500.0));
        assert_eq!(cpu_millicores("2k"), Some(2_000_000.0));
        assert_eq!(cpu_millicores("lots"), None);
        assert_eq!(cpu_millicores("-1"), None);
        assert_eq!(cpu_millicores("1Ki"), None);
    }
}
