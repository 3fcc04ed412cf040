//! Machine-readable zones with correct check digits (ICAO Doc 9303), for tests and
//! benchmarks that record identity documents at the enrolment desk. The check digit is
//! computed here independently of `eid_enrolment::mrz`, which these zones are meant to
//! pass.
//!
//! Every zone is for issuing state `TTO` and sex `F`, as the desk journey uses them.

/// The ICAO 9303 check digit: characters valued `0-9` → 0-9, `A-Z` → 10-35, `<` → 0,
/// weighted 7, 3, 1 repeating, summed, modulo 10.
pub fn check_digit(field: &str) -> char {
    let sum: u32 = field
        .bytes()
        .zip([7u32, 3, 1].into_iter().cycle())
        .map(|(c, weight)| {
            let value = match c {
                b'0'..=b'9' => u32::from(c - b'0'),
                b'A'..=b'Z' => u32::from(c - b'A') + 10,
                _ => 0,
            };
            value * weight
        })
        .sum();
    char::from_digit(sum % 10, 10).unwrap_or('0')
}

/// A TD3 (passport) zone, two lines of 44. `surname_given` is the name field as the
/// zone writes it (`ERIKSSON<<ANNA<MARIA`), `birth` and `expiry` are `YYMMDD`.
pub fn td3(surname_given: &str, number: &str, birth: &str, expiry: &str) -> String {
    let line1 = format!("P<TTO{surname_given:<<39}").replace(' ', "<");
    let number = format!("{number:<<9}");
    let personal = "<".repeat(14);
    let mut line2 = format!(
        "{number}{}TTO{birth}{}F{expiry}{}{personal}<",
        check_digit(&number),
        check_digit(birth),
        check_digit(expiry),
    );
    let composite: String = [&line2[0..10], &line2[13..20], &line2[21..43]].concat();
    line2.push(check_digit(&composite));
    format!("{line1}\n{line2}")
}

/// A TD1 (identity card) zone, three lines of 30; arguments as for [`td3`].
pub fn td1(surname_given: &str, number: &str, birth: &str, expiry: &str) -> String {
    let number = format!("{number:<<9}");
    let line1 = format!("I<TTO{number}{}{}", check_digit(&number), "<".repeat(15));
    let mut line2 = format!(
        "{birth}{}F{expiry}{}TTO{}",
        check_digit(birth),
        check_digit(expiry),
        "<".repeat(11)
    );
    let composite: String = [&line1[5..30], &line2[0..7], &line2[8..15], &line2[18..29]].concat();
    line2.push(check_digit(&composite));
    let line3 = format!("{surname_given:<<30}");
    format!("{line1}\n{line2}\n{line3}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_digits_match_doc_9303_examples() {
        // Doc 9303 part 3, 4.9: the specimen document number and dates.
        assert_eq!(check_digit("L898902C3"), '6');
        assert_eq!(check_digit("740812"), '2');
        assert_eq!(check_digit("120415"), '9');
    }

    #[test]
    fn zones_have_the_layouts_lengths() {
        let passport = td3("ERIKSSON<<ANNA<MARIA", "L898902C3", "740812", "120415");
        let lines: Vec<&str> = passport.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines.iter().all(|l| l.len() == 44), "{passport}");
        // The specimen's line 2 up to the personal number.
        assert!(
            lines[1].starts_with("L898902C36TTO7408122F1204159"),
            "{passport}"
        );
        let card = td1("ERIKSSON<<ANNA<MARIA", "D23145890", "740812", "120415");
        let lines: Vec<&str> = card.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines.iter().all(|l| l.len() == 30), "{card}");
    }
}
