//! Who a certificate is about: validated citizen identifiers and X.500 names.

use std::fmt;

use der::{
    Any, Decode, Encode, Tag,
    asn1::{ObjectIdentifier, PrintableStringRef, Utf8StringRef},
};
use x509_cert::{
    attr::AttributeTypeAndValue,
    name::{Name, RdnSequence, RelativeDistinguishedName},
};

use crate::CaError;

const COUNTRY: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.4.6");
const ORGANIZATION: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.4.10");
const COMMON_NAME: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.4.3");
const SURNAME: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.4.4");
const GIVEN_NAME: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.4.42");
const SERIAL_NUMBER: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.4.5");
const ORGANIZATION_IDENTIFIER: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.4.97");

/// A citizen's national identity number: 6 to 20 characters from `0-9 A-Z`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct NationalId(String);

impl NationalId {
    /// Checks and wraps a national identity number.
    pub fn new(id: &str) -> Result<Self, CaError> {
        let valid = (6..=20).contains(&id.len())
            && id
                .bytes()
                .all(|b| b.is_ascii_digit() || b.is_ascii_uppercase());
        if valid {
            Ok(Self(id.to_owned()))
        } else {
            Err(CaError::BadRequest(format!(
                "national id {id:?} must have 6 to 20 characters from 0-9 and A-Z"
            )))
        }
    }

    /// The identifier as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NationalId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Checks one name that goes into a certificate: 1 to 64 characters, no control
/// characters, no leading or trailing space.
fn name_part(what: &str, part: &str) -> Result<(), CaError> {
    let chars = part.chars().count();
    if chars == 0 || chars > 64 {
        return Err(CaError::BadRequest(format!(
            "{what} must have 1 to 64 characters"
        )));
    }
    if part.chars().any(char::is_control) || part.trim() != part {
        return Err(CaError::BadRequest(format!(
            "{what} {part:?} has control characters or surrounding spaces"
        )));
    }
    Ok(())
}

/// A citizen's given name and surname as they go into a certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PersonName {
    given: String,
    surname: String,
}

impl PersonName {
    /// Checks and wraps a name: each part 1 to 64 characters, no control characters,
    /// no leading or trailing space.
    pub fn new(given: &str, surname: &str) -> Result<Self, CaError> {
        name_part("given name", given)?;
        name_part("surname", surname)?;
        Ok(Self {
            given: given.to_owned(),
            surname: surname.to_owned(),
        })
    }

    /// The given name.
    pub fn given(&self) -> &str {
        &self.given
    }

    /// The surname.
    pub fn surname(&self) -> &str {
        &self.surname
    }
}

/// An organisation holding an electronic seal: its registered name, its identifier in
/// the ETSI EN 319 412-1 §5.1.4 semantics (`NTR`, `VAT`, `PSD` or `LEI`, the
/// registering country, a hyphen, the identifier: `NTRTT-4021877`), and the name of
/// the seal (the certificate's commonName, such as "Ministry of Health records seal").
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Organisation {
    name: String,
    identifier: String,
    seal_name: String,
}

impl Organisation {
    /// Checks and wraps an organisation's names and identifier.
    pub fn new(name: &str, identifier: &str, seal_name: &str) -> Result<Self, CaError> {
        name_part("organisation name", name)?;
        name_part("seal name", seal_name)?;
        let well_formed = identifier.len() <= 64
            && identifier
                .get(..3)
                .is_some_and(|scheme| ["NTR", "VAT", "PSD", "LEI"].contains(&scheme))
            && identifier
                .get(3..5)
                .is_some_and(|country| country.bytes().all(|b| b.is_ascii_uppercase()))
            && identifier.get(5..6) == Some("-")
            && identifier.get(6..).is_some_and(|id| {
                !id.is_empty()
                    && id
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-./".contains(&b))
            });
        if !well_formed {
            return Err(CaError::BadRequest(format!(
                "organisation identifier {identifier:?} must be NTR, VAT, PSD or LEI, a two-letter \
                 country code, a hyphen and the registered identifier (EN 319 412-1 §5.1.4), \
                 such as NTRTT-4021877"
            )));
        }
        Ok(Self {
            name: name.to_owned(),
            identifier: identifier.to_owned(),
            seal_name: seal_name.to_owned(),
        })
    }

    /// The registered name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The identifier (`NTRTT-4021877`).
    pub fn identifier(&self) -> &str {
        &self.identifier
    }

    /// The seal's name.
    pub fn seal_name(&self) -> &str {
        &self.seal_name
    }
}

/// Builds a `Name` attribute by attribute, with the string type each attribute needs
/// (PrintableString for country and serialNumber, UTF8String for the rest).
#[derive(Debug, Default)]
pub(crate) struct NameBuilder {
    rdns: Vec<(ObjectIdentifier, Tag, String)>,
}

impl NameBuilder {
    pub(crate) fn country(mut self, code: &str) -> Self {
        self.rdns
            .push((COUNTRY, Tag::PrintableString, code.to_owned()));
        self
    }

    pub(crate) fn organization(mut self, name: &str) -> Self {
        self.rdns
            .push((ORGANIZATION, Tag::Utf8String, name.to_owned()));
        self
    }

    pub(crate) fn surname(mut self, name: &str) -> Self {
        self.rdns.push((SURNAME, Tag::Utf8String, name.to_owned()));
        self
    }

    pub(crate) fn given_name(mut self, name: &str) -> Self {
        self.rdns
            .push((GIVEN_NAME, Tag::Utf8String, name.to_owned()));
        self
    }

    pub(crate) fn serial_number(mut self, serial: &str) -> Self {
        self.rdns
            .push((SERIAL_NUMBER, Tag::PrintableString, serial.to_owned()));
        self
    }

    pub(crate) fn organization_identifier(mut self, identifier: &str) -> Self {
        self.rdns.push((
            ORGANIZATION_IDENTIFIER,
            Tag::Utf8String,
            identifier.to_owned(),
        ));
        self
    }

    pub(crate) fn common_name(mut self, name: &str) -> Self {
        self.rdns
            .push((COMMON_NAME, Tag::Utf8String, name.to_owned()));
        self
    }

    pub(crate) fn build(self) -> Result<Name, CaError> {
        let mut sequence = RdnSequence::default();
        for (oid, tag, text) in self.rdns {
            let value = match tag {
                Tag::PrintableString => {
                    Any::encode_from(&PrintableStringRef::new(&text).map_err(|_| {
                        CaError::BadRequest(format!("{text:?} is not a printable string"))
                    })?)
                }
                _ => Any::encode_from(
                    &Utf8StringRef::new(&text).map_err(|e| CaError::encoding("name", e))?,
                ),
            }
            .map_err(|e| CaError::encoding("name", e))?;
            let rdn =
                RelativeDistinguishedName::try_from(vec![AttributeTypeAndValue { oid, value }])
                    .map_err(|e| CaError::encoding("name", e))?;
            sequence.push(rdn);
        }
        // Through DER, so the Name is checked as any parsed one would be.
        let der = sequence
            .to_der()
            .map_err(|e| CaError::encoding("name", e))?;
        Name::from_der(&der).map_err(|e| CaError::encoding("name", e))
    }
}

/// The subject of a citizen certificate: country, names, and the ETSI EN 319 412-1
/// semantics identifier `PNO<country>-<national id>` as serialNumber.
pub(crate) fn citizen_subject(
    country: &str,
    id: &NationalId,
    name: &PersonName,
) -> Result<Name, CaError> {
    NameBuilder::default()
        .country(country)
        .surname(name.surname())
        .given_name(name.given())
        .serial_number(&format!("PNO{country}-{id}"))
        .common_name(&format!("{} {}", name.given(), name.surname()))
        .build()
}

/// The subject of an organisation's seal certificate (EN 319 412-3 §4.2.1): country,
/// organisation name, organisation identifier, and the seal's name as commonName.
pub(crate) fn organisation_subject(
    country: &str,
    organisation: &Organisation,
) -> Result<Name, CaError> {
    NameBuilder::default()
        .country(country)
        .organization(organisation.name())
        .organization_identifier(organisation.identifier())
        .common_name(organisation.seal_name())
        .build()
}
