//! Keys the signing service holds on its own key store for others: citizens' remote
//! signing keys (CSC credentials) and organisations' seal keys. Each is generated on the
//! token, certified by the CA on the key layer's word that it is on a qualified
//! signature creation device, its certificate stored beside it, and destroyed when it is
//! withdrawn or its creation fails part-way.

use eid_hsm::{HsmError, KeyLabel, KeyRole, KeySpec, KeyStore, PublicKey, QscdEvidence};

/// A key just generated, with what the CA needs to certify it.
#[derive(Debug)]
pub(crate) struct NewKey {
    /// A PKCS#10 request signed by the key (the proof of possession).
    pub(crate) csr: Vec<u8>,
    /// The public key.
    pub(crate) public_key: PublicKey,
    /// The key layer's evidence about the key's device.
    pub(crate) evidence: QscdEvidence,
}

/// Why a key operation failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum KeyTaskError {
    /// The key store refused or failed.
    #[error(transparent)]
    Hsm(#[from] HsmError),
    /// The blocking task did not finish.
    #[error("key task: {0}")]
    Task(String),
}

/// Runs a blocking key-store call off the executor.
async fn blocking<T: Send + 'static>(
    call: impl FnOnce() -> Result<T, HsmError> + Send + 'static,
) -> Result<T, KeyTaskError> {
    tokio::task::spawn_blocking(call)
        .await
        .map_err(|e| KeyTaskError::Task(e.to_string()))?
        .map_err(KeyTaskError::Hsm)
}

/// Why `keys` cannot hold keys for others, if it cannot: only an HSM-class token is a
/// qualified signature creation device; the soft store is not.
pub(crate) fn not_an_hsm(keys: &KeyStore, what: &str) -> Option<String> {
    (keys.class() != eid_hsm::TokenClass::Hsm).then(|| {
        format!(
            "{what} live on an HSM (a qualified signature creation device); the service key \
             store is a {} store ({}). Configure [keys] for a PKCS#11 token of class hsm",
            keys.class(),
            keys.description()
        )
    })
}

/// Generates a P-256 key under `label` and asks it for a certification request with
/// the placeholder `subject` (the CA writes the real one).
pub(crate) async fn generate(
    keys: &KeyStore,
    label: &KeyLabel,
    subject: &'static str,
) -> Result<NewKey, KeyTaskError> {
    let (keys, label) = (keys.clone(), label.clone());
    blocking(move || {
        let info = keys.generate(&label, KeySpec::EcP256, KeyRole::Service)?;
        let evidence = keys.qscd_evidence(&label)?;
        let csr = keys.signer(&label, None)?.certification_request(subject)?;
        Ok(NewKey {
            csr,
            public_key: info.public_key,
            evidence,
        })
    })
    .await
}

/// Stores the key's certificate on the token beside it, where PKCS#11 tools find it.
pub(crate) async fn store_certificate(
    keys: &KeyStore,
    label: &KeyLabel,
    der: &[u8],
) -> Result<(), KeyTaskError> {
    let (keys, label, der) = (keys.clone(), label.clone(), der.to_vec());
    blocking(move || keys.store_certificate(&label, &der)).await
}

/// Destroys the key (and its certificate) on the token; whether there was one.
pub(crate) async fn destroy(keys: &KeyStore, label: &KeyLabel) -> Result<bool, KeyTaskError> {
    let (keys, label) = (keys.clone(), label.clone());
    blocking(move || keys.destroy(&label)).await
}

/// Signs `message` with the key `label` (no PIN: a service key).
pub(crate) async fn sign(
    keys: &KeyStore,
    label: &KeyLabel,
    message: Vec<u8>,
) -> Result<Vec<u8>, KeyTaskError> {
    let (keys, label) = (keys.clone(), label.clone());
    blocking(move || {
        keys.signer(&label, None)?
            .sign(&message)
            .map(eid_hsm::Signature::into_bytes)
    })
    .await
}
