//! Sizes as users type them on the command line: `WIDTHxHEIGHT` (`384x288`), the one parser
//! behind every size flag (training sizes, camera modes, model cards).

/// `"384x288"` → (384, 288); both sides at least 1. The error says what was expected, for the
/// caller to put its flag's name before.
pub fn parse_wxh(s: &str) -> Result<(u32, u32), String> {
    let bad = || format!("'{s}' is not WIDTHxHEIGHT (e.g. 640x480)");
    let (w, h) = s.split_once(['x', 'X']).ok_or_else(bad)?;
    let (w, h): (u32, u32) = (w.trim().parse().map_err(|_| bad())?, h.trim().parse().map_err(|_| bad())?);
    if w == 0 || h == 0 {
        return Err(bad());
    }
    Ok((w, h))
}

#[cfg(test)]
mod tests {
    #[test]
    fn sizes_parse_and_bad_ones_are_named() {
        assert_eq!(super::parse_wxh("384x288"), Ok((384, 288)));
        assert_eq!(super::parse_wxh("64X48"), Ok((64, 48)));
        for bad in ["384", "0x10", "x", "axb", "-1x5"] {
            assert!(super::parse_wxh(bad).unwrap_err().contains(&format!("'{bad}'")), "{bad}");
        }
    }
}
