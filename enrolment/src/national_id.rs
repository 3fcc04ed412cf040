//! National identity numbers: 13 digits, the last a Verhoeff check digit over the other
//! twelve (as India's Aadhaar numbers use).
//!
//! Verhoeff's scheme works in the dihedral group D5 and catches every single-digit error
//! and every transposition of adjacent digits, which the Luhn digit misses for `09`/`90`.
//! The first digit is never 0 (so the number survives tools that read it as an integer)
//! and the twelve payload digits come from the CSPRNG: numbers say nothing about the
//! person (no birth date, no sex, no place), so they can be printed on a card without
//! disclosing anything else.

use std::fmt;

/// D5 multiplication table.
const MULTIPLY: [[u8; 10]; 10] = [
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
    [1, 2, 3, 4, 0, 6, 7, 8, 9, 5],
    [2, 3, 4, 0, 1, 7, 8, 9, 5, 6],
    [3, 4, 0, 1, 2, 8, 9, 5, 6, 7],
    [4, 0, 1, 2, 3, 9, 5, 6, 7, 8],
    [5, 9, 8, 7, 6, 0, 4, 3, 2, 1],
    [6, 5, 9, 8, 7, 1, 0, 4, 3, 2],
    [7, 6, 5, 9, 8, 2, 1, 0, 4, 3],
    [8, 7, 6, 5, 9, 3, 2, 1, 0, 4],
    [9, 8, 7, 6, 5, 4, 3, 2, 1, 0],
];

/// The permutation applied to a digit according to its position (mod 8).
const PERMUTE: [[u8; 10]; 8] = [
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
    [1, 5, 7, 6, 2, 8, 3, 0, 9, 4],
    [5, 8, 0, 3, 7, 9, 6, 1, 4, 2],
    [8, 9, 1, 6, 0, 4, 3, 5, 2, 7],
    [9, 4, 5, 3, 1, 2, 6, 8, 7, 0],
    [4, 2, 8, 6, 5, 7, 3, 9, 0, 1],
    [2, 7, 9, 3, 8, 0, 6, 4, 1, 5],
    [7, 0, 4, 6, 9, 1, 3, 2, 5, 8],
];

/// Inverses in D5.
const INVERSE: [u8; 10] = [0, 4, 3, 2, 1, 5, 6, 7, 8, 9];

/// Folds digits (rightmost first, starting at position `offset`) into the checksum.
fn fold(digits: &[u8], offset: usize) -> u8 {
    digits.iter().rev().enumerate().fold(0u8, |check, (i, &d)| {
        MULTIPLY[usize::from(check)][usize::from(PERMUTE[(i + offset) % 8][usize::from(d)])]
    })
}

/// The Verhoeff check digit for `digits` (each 0-9).
pub fn check_digit(digits: &[u8]) -> u8 {
    INVERSE[usize::from(fold(digits, 1))]
}

/// Whether `digits`, ending in its check digit, is valid.
pub fn is_valid(digits: &[u8]) -> bool {
    !digits.is_empty() && fold(digits, 0) == 0
}

/// How many digits a national identity number has.
pub const LENGTH: usize = 13;

/// A national identity number whose check digit is right.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NationalIdNumber(String);

/// Why a text is not a national identity number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NationalIdError {
    /// Not 13 digits.
    #[error("a national identity number has 13 digits")]
    Length,
    /// Something other than a digit.
    #[error("a national identity number has only digits")]
    NotDigits,
    /// The check digit does not match: a digit was mistyped or two were swapped.
    #[error("the check digit of this national identity number is wrong (a digit mistyped?)")]
    CheckDigit,
}

impl NationalIdNumber {
    /// Parses and checks a number (spaces and hyphens between digit groups ignored).
    pub fn parse(text: &str) -> Result<Self, NationalIdError> {
        let compact: String = text.chars().filter(|c| !matches!(c, ' ' | '-')).collect();
        if !compact.chars().all(|c| c.is_ascii_digit()) {
            return Err(NationalIdError::NotDigits);
        }
        if compact.len() != LENGTH {
            return Err(NationalIdError::Length);
        }
        let digits: Vec<u8> = compact.bytes().map(|b| b - b'0').collect();
        if !is_valid(&digits) {
            return Err(NationalIdError::CheckDigit);
        }
        Ok(Self(compact))
    }

    /// A fresh random number (first digit 1-9), check digit appended. Uniqueness is the
    /// store's job: the caller retries on a clash.
    pub fn random() -> Result<Self, getrandom::Error> {
        let mut digits = Vec::with_capacity(LENGTH);
        // Rejection sampling keeps every digit uniform (256 is not a multiple of 10).
        while digits.len() < LENGTH - 1 {
            let mut bytes = [0u8; 16];
            getrandom::fill(&mut bytes)?;
            for b in bytes.into_iter().filter(|b| *b < 250) {
                let digit = b % 10;
                if (digits.is_empty() && digit == 0) || digits.len() == LENGTH - 1 {
                    continue;
                }
                digits.push(digit);
            }
        }
        digits.push(check_digit(&digits));
        Ok(Self(digits.iter().map(|d| char::from(b'0' + d)).collect()))
    }

    /// The 13 digits.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NationalIdNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]

    use super::*;

    fn digits(text: &str) -> Vec<u8> {
        text.bytes().map(|b| b - b'0').collect()
    }

    #[test]
    fn published_examples() {
        // The worked examples that accompany descriptions of the scheme.
        assert_eq!(check_digit(&digits("236")), 3);
        assert!(is_valid(&digits("2363")));
        assert_eq!(check_digit(&digits("12345")), 1);
        assert!(is_valid(&digits("123451")));
        assert_eq!(check_digit(&digits("142857")), 0);
        assert!(!is_valid(&digits("2364")));
    }

    #[test]
    fn catches_every_single_error_and_adjacent_transposition() {
        for _ in 0..200 {
            let number = NationalIdNumber::random().unwrap();
            let good = digits(number.as_str());
            assert!(is_valid(&good));
            for i in 0..good.len() {
                for d in 0..10u8 {
                    if d != good[i] {
                        let mut bad = good.clone();
                        bad[i] = d;
                        assert!(!is_valid(&bad), "{number}: digit {i} -> {d}");
                    }
                }
                if i + 1 < good.len() && good[i] != good[i + 1] {
                    let mut swapped = good.clone();
                    swapped.swap(i, i + 1);
                    assert!(!is_valid(&swapped), "{number}: swap at {i}");
                }
            }
        }
    }

    #[test]
    fn random_numbers_have_thirteen_digits_and_no_leading_zero() {
        for _ in 0..500 {
            let n = NationalIdNumber::random().unwrap();
            assert_eq!(n.as_str().len(), LENGTH);
            assert!(!n.as_str().starts_with('0'));
            assert_eq!(NationalIdNumber::parse(n.as_str()).unwrap(), n);
        }
    }

    #[test]
    fn parse_reports_what_is_wrong() {
        let n = NationalIdNumber::random().unwrap();
        let spaced = format!(
            "{} {} {}",
            &n.as_str()[..4],
            &n.as_str()[4..8],
            &n.as_str()[8..]
        );
        assert_eq!(NationalIdNumber::parse(&spaced).unwrap(), n);
        assert_eq!(
            NationalIdNumber::parse("12345"),
            Err(NationalIdError::Length)
        );
        assert_eq!(
            NationalIdNumber::parse("12345678901a3"),
            Err(NationalIdError::NotDigits)
        );
        let mut wrong = n.as_str().to_owned();
        let last = wrong.pop().unwrap();
        wrong.push(if last == '0' { '1' } else { '0' });
        assert_eq!(
            NationalIdNumber::parse(&wrong),
            Err(NationalIdError::CheckDigit)
        );
    }
}
