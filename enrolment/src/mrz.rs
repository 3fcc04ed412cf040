//! Machine-readable zones of travel and identity documents (ICAO Doc 9303, parts 3 to
//! 6): TD1 (3 lines of 30, ID cards), TD2 (2 of 36) and TD3 (2 of 44, passports).
//!
//! Every check digit is verified and every failure is reported with the field it
//! protects, so the clerk knows which part of the document to look at again. Names are
//! covered by no check digit; the desk compares them with the application instead.

use std::fmt;

/// The three layouts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MrzFormat {
    /// Three lines of 30 characters (ID cards).
    Td1,
    /// Two lines of 36 characters.
    Td2,
    /// Two lines of 44 characters (passports).
    Td3,
}

impl MrzFormat {
    /// Its name in Doc 9303.
    pub fn name(self) -> &'static str {
        match self {
            Self::Td1 => "TD1",
            Self::Td2 => "TD2",
            Self::Td3 => "TD3",
        }
    }
}

/// A date as the zone writes it (YYMMDD), checked to be a calendar date.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MrzDate {
    /// Two-digit year.
    pub year: u8,
    /// Month, 1-12.
    pub month: u8,
    /// Day, 1-31 (valid for the month).
    pub day: u8,
}

impl MrzDate {
    /// The full date of birth: the latest century that does not put it in the future.
    pub fn as_birth_date(self, today: time::Date) -> Option<time::Date> {
        let this_century = today.year() / 100 * 100;
        [this_century, this_century - 100]
            .into_iter()
            .filter_map(|c| self.in_century(c))
            .find(|d| *d <= today)
    }

    /// The full expiry date: expiry dates are in this century unless that is more than
    /// 50 years ahead.
    pub fn as_expiry_date(self, today: time::Date) -> Option<time::Date> {
        let this_century = today.year() / 100 * 100;
        let date = self.in_century(this_century)?;
        if date.year() > today.year() + 50 {
            self.in_century(this_century - 100)
        } else {
            Some(date)
        }
    }

    fn in_century(self, century: i32) -> Option<time::Date> {
        let month = time::Month::try_from(self.month).ok()?;
        time::Date::from_calendar_date(century + i32::from(self.year), month, self.day).ok()
    }
}

impl fmt::Display for MrzDate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02}{:02}{:02}", self.year, self.month, self.day)
    }
}

/// A zone whose every check digit is right.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mrz {
    /// The layout.
    pub format: MrzFormat,
    /// Document code (`P`, `I`, `ID`, `AC`, ...), fillers removed.
    pub document_code: String,
    /// Issuing state or organisation (ICAO three-letter code).
    pub issuing_state: String,
    /// Document number, fillers removed (long TD1 numbers joined).
    pub document_number: String,
    /// Holder's nationality (three-letter code).
    pub nationality: String,
    /// Date of birth.
    pub birth_date: MrzDate,
    /// `M`, `F` or `X` (`<` is read as X, unspecified).
    pub sex: char,
    /// Date of expiry.
    pub expiry_date: MrzDate,
    /// Primary identifier (surname), words separated by single spaces.
    pub surname: String,
    /// Secondary identifier (given names), words separated by single spaces.
    pub given_names: String,
    /// Optional data (personal number on TD3), fillers removed.
    pub optional_data: String,
}

/// One check digit that does not match its field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckFailure {
    /// The field it protects (`document number`, `date of birth`, `date of expiry`,
    /// `personal number`, `composite`).
    pub field: &'static str,
    /// The digit the zone carries.
    pub found: char,
    /// The digit the field's characters give.
    pub expected: char,
}

/// Why a zone was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MrzError {
    /// Not a zone at all: wrong line count or lengths, characters outside `A-Z0-9<`.
    #[error("malformed machine-readable zone: {0}")]
    Malformed(String),
    /// A date field is not a calendar date.
    #[error("the {field} in the machine-readable zone is not a valid date ({value})")]
    Date {
        /// Which date.
        field: &'static str,
        /// What the zone says.
        value: String,
    },
    /// One or more check digits are wrong.
    #[error("{}", describe(.0))]
    CheckDigits(Vec<CheckFailure>),
}

fn describe(failures: &[CheckFailure]) -> String {
    let parts: Vec<String> = failures
        .iter()
        .map(|f| {
            format!(
                "the {} check digit is {} but the field gives {}",
                f.field, f.found, f.expected
            )
        })
        .collect();
    format!("wrong check digit: {}", parts.join("; "))
}

/// The value of one zone character in a check-digit sum.
fn value(c: u8) -> u32 {
    match c {
        b'0'..=b'9' => u32::from(c - b'0'),
        b'A'..=b'Z' => u32::from(c - b'A') + 10,
        _ => 0,
    }
}

/// The check digit over `field`: weights 7, 3, 1 repeating, sum mod 10.
pub fn check_digit(field: &[u8]) -> char {
    let sum: u32 = field
        .iter()
        .zip([7u32, 3, 1].into_iter().cycle())
        .map(|(&c, w)| value(c) * w)
        .sum();
    char::from(b'0' + u8::try_from(sum % 10).unwrap_or(0))
}

/// Collects check failures.
#[derive(Default)]
struct Checks(Vec<CheckFailure>);

impl Checks {
    fn verify(&mut self, field: &'static str, data: &[u8], digit: u8) {
        let expected = check_digit(data);
        if char::from(digit) != expected {
            self.0.push(CheckFailure {
                field,
                found: char::from(digit),
                expected,
            });
        }
    }

    /// An optional field that is all fillers may carry `<` (or 0) as its check digit.
    fn verify_optional(&mut self, field: &'static str, data: &[u8], digit: u8) {
        if data.iter().all(|&c| c == b'<') && matches!(digit, b'<' | b'0') {
            return;
        }
        self.verify(field, data, digit);
    }
}

fn text(field: &[u8]) -> String {
    String::from_utf8_lossy(field)
        .trim_end_matches('<')
        .replace('<', " ")
        .trim()
        .to_owned()
}

fn date(field: &'static str, raw: &[u8]) -> Result<MrzDate, MrzError> {
    let bad = || MrzError::Date {
        field,
        value: String::from_utf8_lossy(raw).into_owned(),
    };
    if !raw.iter().all(u8::is_ascii_digit) {
        return Err(bad());
    }
    let two = |i: usize| (raw[i] - b'0') * 10 + (raw[i + 1] - b'0');
    let date = MrzDate {
        year: two(0),
        month: two(2),
        day: two(4),
    };
    // 2000 is a leap year, so 29 February of any two-digit year that could be one passes.
    let leap_year = 2000 + i32::from(date.year / 4 * 4);
    let month = time::Month::try_from(date.month).map_err(|_| bad())?;
    if date.day == 0 || date.day > month.length(leap_year) {
        return Err(bad());
    }
    Ok(date)
}

fn names(field: &[u8]) -> (String, String) {
    let raw = String::from_utf8_lossy(field);
    let raw = raw.trim_end_matches('<');
    let (primary, secondary) = raw.split_once("<<").unwrap_or((raw, ""));
    let words = |s: &str| {
        s.split('<')
            .filter(|w| !w.is_empty())
            .collect::<Vec<_>>()
            .join(" ")
    };
    (words(primary), words(secondary))
}

fn sex(c: u8) -> Result<char, MrzError> {
    match c {
        b'M' | b'F' | b'X' => Ok(char::from(c)),
        b'<' => Ok('X'),
        _ => Err(MrzError::Malformed(format!(
            "the sex field holds '{}' (M, F, X or < expected)",
            char::from(c)
        ))),
    }
}

/// Parses and checks a zone as typed or scanned: lines separated by newlines, surrounding
/// whitespace ignored, lowercase read as uppercase.
pub fn parse(input: &str) -> Result<Mrz, MrzError> {
    let lines: Vec<Vec<u8>> = input
        .lines()
        .map(|l| l.trim().to_ascii_uppercase().into_bytes())
        .filter(|l| !l.is_empty())
        .collect();
    for (i, line) in lines.iter().enumerate() {
        if let Some(c) = line
            .iter()
            .find(|c| !(c.is_ascii_uppercase() || c.is_ascii_digit() || **c == b'<'))
        {
            return Err(MrzError::Malformed(format!(
                "line {} holds '{}'; only A-Z, 0-9 and < are allowed",
                i + 1,
                char::from(*c)
            )));
        }
    }
    let lengths: Vec<usize> = lines.iter().map(Vec::len).collect();
    match lengths.as_slice() {
        [30, 30, 30] => td1(&lines[0], &lines[1], &lines[2]),
        [36, 36] => td2_td3(MrzFormat::Td2, &lines[0], &lines[1]),
        [44, 44] => td2_td3(MrzFormat::Td3, &lines[0], &lines[1]),
        _ => Err(MrzError::Malformed(format!(
            "{} line(s) of {:?} characters; a zone has 3 lines of 30 (TD1), 2 of 36 (TD2) or 2 of 44 (TD3)",
            lines.len(),
            lengths
        ))),
    }
}

/// Doc 9303 part 5: line 1 code, state, number (5-13 / check 14, 0-based), optional;
/// line 2 birth, sex, expiry, nationality, optional, composite; line 3 names.
fn td1(l1: &[u8], l2: &[u8], l3: &[u8]) -> Result<Mrz, MrzError> {
    let mut checks = Checks::default();
    let optional1 = &l1[15..30];
    let (document_number, optional1_text) = if l1[14] == b'<'
        && l1[5..14].iter().any(|&c| c != b'<')
    {
        // Long document number (part 5, 4.2.4): the number continues in the optional
        // data, its check digit is the last character before the first filler there.
        let end = optional1
            .iter()
            .position(|&c| c == b'<')
            .unwrap_or(optional1.len());
        if end == 0 {
            return Err(MrzError::Malformed(
                "the document number has no check digit (position 15 is < but the optional data is empty)"
                    .into(),
            ));
        }
        let mut number = l1[5..14].to_vec();
        number.extend_from_slice(&optional1[..end - 1]);
        checks.verify("document number", &number, optional1[end - 1]);
        (text(&number), text(&optional1[end..]))
    } else {
        checks.verify("document number", &l1[5..14], l1[14]);
        (text(&l1[5..14]), text(optional1))
    };
    let birth_date = date("date of birth", &l2[0..6])?;
    checks.verify("date of birth", &l2[0..6], l2[6]);
    let expiry_date = date("date of expiry", &l2[8..14])?;
    checks.verify("date of expiry", &l2[8..14], l2[14]);
    let mut composite = Vec::with_capacity(61);
    composite.extend_from_slice(&l1[5..30]);
    composite.extend_from_slice(&l2[0..7]);
    composite.extend_from_slice(&l2[8..15]);
    composite.extend_from_slice(&l2[18..29]);
    checks.verify("composite", &composite, l2[29]);
    if !checks.0.is_empty() {
        return Err(MrzError::CheckDigits(checks.0));
    }
    let (surname, given_names) = names(l3);
    let optional2 = text(&l2[18..29]);
    Ok(Mrz {
        format: MrzFormat::Td1,
        document_code: text(&l1[0..2]),
        issuing_state: text(&l1[2..5]),
        document_number,
        nationality: text(&l2[15..18]),
        birth_date,
        sex: sex(l2[7])?,
        expiry_date,
        surname,
        given_names,
        optional_data: [optional1_text, optional2]
            .into_iter()
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join(" "),
    })
}

/// Doc 9303 parts 4 and 6: line 1 code, state, names; line 2 number (0-8 / check 9),
/// nationality, birth, sex, expiry, optional or personal number, composite.
fn td2_td3(format: MrzFormat, l1: &[u8], l2: &[u8]) -> Result<Mrz, MrzError> {
    let mut checks = Checks::default();
    let last = l2.len() - 1;
    checks.verify("document number", &l2[0..9], l2[9]);
    let birth_date = date("date of birth", &l2[13..19])?;
    checks.verify("date of birth", &l2[13..19], l2[19]);
    let expiry_date = date("date of expiry", &l2[21..27])?;
    checks.verify("date of expiry", &l2[21..27], l2[27]);
    let optional_end = if format == MrzFormat::Td3 {
        // TD3's positions 29-42 are the personal number, with its own check digit.
        checks.verify_optional("personal number", &l2[28..42], l2[42]);
        43
    } else {
        last
    };
    let mut composite = Vec::with_capacity(last);
    composite.extend_from_slice(&l2[0..10]);
    composite.extend_from_slice(&l2[13..20]);
    composite.extend_from_slice(&l2[21..optional_end]);
    checks.verify("composite", &composite, l2[last]);
    if !checks.0.is_empty() {
        return Err(MrzError::CheckDigits(checks.0));
    }
    let (surname, given_names) = names(&l1[5..]);
    let optional_data = if format == MrzFormat::Td3 {
        text(&l2[28..42])
    } else {
        text(&l2[28..last])
    };
    Ok(Mrz {
        format,
        document_code: text(&l1[0..2]),
        issuing_state: text(&l1[2..5]),
        document_number: text(&l2[0..9]),
        nationality: text(&l2[10..13]),
        birth_date,
        sex: sex(l2[20])?,
        expiry_date,
        surname,
        given_names,
        optional_data,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]

    use super::*;

    // The specimens of ICAO Doc 9303 (the fictional state of Utopia, holder Anna Maria
    // Eriksson).
    const TD3: &str = "P<UTOERIKSSON<<ANNA<MARIA<<<<<<<<<<<<<<<<<<<\n\
                       L898902C36UTO7408122F1204159ZE184226B<<<<<10";
    const TD2: &str = "I<UTOERIKSSON<<ANNA<MARIA<<<<<<<<<<<\n\
                       D231458907UTO7408122F1204159<<<<<<<6";
    const TD1: &str = "I<UTOD231458907<<<<<<<<<<<<<<<\n\
                       7408122F1204159UTO<<<<<<<<<<<6\n\
                       ERIKSSON<<ANNA<MARIA<<<<<<<<<<";

    #[test]
    fn specimens_parse_with_every_check_digit_right() {
        let td3 = parse(TD3).unwrap();
        assert_eq!(td3.format, MrzFormat::Td3);
        assert_eq!(td3.document_code, "P");
        assert_eq!(td3.issuing_state, "UTO");
        assert_eq!(td3.document_number, "L898902C3");
        assert_eq!(td3.surname, "ERIKSSON");
        assert_eq!(td3.given_names, "ANNA MARIA");
        assert_eq!(td3.optional_data, "ZE184226B");
        assert_eq!(td3.sex, 'F');
        assert_eq!(td3.birth_date.to_string(), "740812");
        assert_eq!(td3.expiry_date.to_string(), "120415");

        let td2 = parse(TD2).unwrap();
        assert_eq!(td2.format, MrzFormat::Td2);
        assert_eq!(td2.document_number, "D23145890");
        assert_eq!(td2.nationality, "UTO");

        let td1 = parse(TD1).unwrap();
        assert_eq!(td1.format, MrzFormat::Td1);
        assert_eq!(td1.document_code, "I");
        assert_eq!(td1.document_number, "D23145890");
        assert_eq!(td1.given_names, "ANNA MARIA");
        let today = time::macros::date!(2026 - 11 - 21);
        assert_eq!(
            td1.birth_date.as_birth_date(today),
            Some(time::macros::date!(1974 - 08 - 12))
        );
        assert_eq!(
            td1.expiry_date.as_expiry_date(today),
            Some(time::macros::date!(2012 - 04 - 15))
        );
    }

    #[test]
    fn a_wrong_digit_names_its_field() {
        // Document number check digit 6 changed to 5: that field and the composite fail.
        let bad = TD3.replace("L898902C36", "L898902C35");
        let MrzError::CheckDigits(failures) = parse(&bad).unwrap_err() else {
            panic!("check digits expected")
        };
        let fields: Vec<&str> = failures.iter().map(|f| f.field).collect();
        assert_eq!(fields, ["document number", "composite"]);
        assert_eq!(failures[0].expected, '6');
        // A mistyped birth date.
        let bad = TD1.replace("7408122F", "7408132F");
        let error = parse(&bad).unwrap_err().to_string();
        assert!(error.contains("date of birth check digit is 2"), "{error}");
        // The composite alone.
        let bad = TD2.replace("<<<<<<<6", "<<<<<<<7");
        let MrzError::CheckDigits(failures) = parse(&bad).unwrap_err() else {
            panic!("check digits expected")
        };
        assert_eq!(failures.len(), 1);
        assert_eq!(failures[0].field, "composite");
        // The personal number on TD3.
        let bad = TD3.replace("ZE184226B<<<<<10", "ZE184227B<<<<<10");
        let error = parse(&bad).unwrap_err().to_string();
        assert!(error.contains("personal number"), "{error}");
    }

    #[test]
    fn long_td1_document_numbers_continue_in_the_optional_data() {
        // Part 5, 4.2.4: number D23145890734 (12 characters), check digit 9 after it.
        let number = b"D23145890734";
        let digit = check_digit(number);
        assert_eq!(digit, '9');
        let line1 = format!("I<UTOD23145890<734{digit}<<<<<<<<<<<");
        assert_eq!(line1.len(), 30);
        let mut line2 = b"7408122F1204159UTO<<<<<<<<<<<".to_vec();
        let mut composite = line1.as_bytes()[5..30].to_vec();
        composite.extend_from_slice(&line2[0..7]);
        composite.extend_from_slice(&line2[8..15]);
        composite.extend_from_slice(&line2[18..29]);
        line2.push(check_digit(&composite) as u8);
        let zone = format!(
            "{line1}\n{}\nERIKSSON<<ANNA<MARIA<<<<<<<<<<",
            String::from_utf8(line2).unwrap()
        );
        let mrz = parse(&zone).unwrap();
        assert_eq!(mrz.document_number, "D23145890734");
        assert_eq!(mrz.optional_data, "");
        let wrong = zone.replace("<7349<", "<7348<");
        let MrzError::CheckDigits(failures) = parse(&wrong).unwrap_err() else {
            panic!("check digits expected")
        };
        assert_eq!(failures[0].field, "document number");
    }

    #[test]
    fn malformed_zones_say_what_is_wrong() {
        assert!(matches!(parse("P<UTO"), Err(MrzError::Malformed(_))));
        let error = parse(&TD3.replace("ERIKSSON", "ERIKSSÖN")).unwrap_err();
        assert!(error.to_string().contains("only A-Z"), "{error}");
        let error = parse(&TD3.replace("7408122F", "7413122F")).unwrap_err();
        assert!(
            matches!(
                error,
                MrzError::Date {
                    field: "date of birth",
                    ..
                }
            ),
            "{error}"
        );
        // Lowercase and surrounding spaces as a clerk may paste them.
        assert!(parse(&format!("  {}  ", TD2.to_lowercase())).is_ok());
    }

    #[test]
    fn every_digit_of_the_specimens_is_checked() {
        // Any single changed digit in a checked field of line 2 is caught.
        let lines: Vec<&str> = TD3.lines().collect();
        let line2 = lines[1].as_bytes();
        for (i, c) in line2.iter().enumerate() {
            if !c.is_ascii_digit() {
                continue;
            }
            let mut changed = line2.to_vec();
            changed[i] = if *c == b'9' { b'0' } else { c + 1 };
            let zone = format!("{}\n{}", lines[0], String::from_utf8(changed).unwrap());
            assert!(parse(&zone).is_err(), "change at {i} not caught");
        }
    }
}
