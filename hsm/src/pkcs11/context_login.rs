//! The one audited exception to `deny(unsafe_code)`: a raw `C_Sign` for keys with
//! `CKA_ALWAYS_AUTHENTICATE`.
//!
//! Such a key needs `C_SignInit`, then `C_Login(CKU_CONTEXT_SPECIFIC)`, then `C_Sign`
//! on the same session. cryptoki 0.12.1's `Session::sign` always runs its own
//! `C_SignInit` first, and `sign_update`/`sign_final` fail for single-part mechanisms
//! such as `CKM_ECDSA`, so the last step has no safe call. Upstream has added
//! `Session::sign_single` (sign without init); once a release has it, this module is
//! replaced by `session.sign_single(data)` and can go.
//!
//! How: the module is opened again with `libloading`. `dlopen` of a library that is
//! already loaded returns the same instance, so its function list, its global state
//! and the session handles cryptoki gave us are the ones we pass here. The library
//! handle and the function pointers are cached per module path.
//!
//! The test hook `close_all_sessions` lives here too, for the same reason (cryptoki
//! has no `C_CloseAllSessions`).
#![allow(unsafe_code)]

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, OnceLock},
};

use cryptoki::{
    context::Function,
    error::{Error as CryptokiError, Rv},
    session::Session,
    slot::Slot,
};
use cryptoki_sys::{CK_FUNCTION_LIST, CK_RV, CK_SESSION_HANDLE, CK_SLOT_ID, CK_ULONG};

use super::CallError;
use crate::HsmError;

type SignFn =
    unsafe extern "C" fn(CK_SESSION_HANDLE, *mut u8, CK_ULONG, *mut u8, *mut CK_ULONG) -> CK_RV;
type CloseAllSessionsFn = unsafe extern "C" fn(CK_SLOT_ID) -> CK_RV;
type GetFunctionListFn = unsafe extern "C" fn(*mut *mut CK_FUNCTION_LIST) -> CK_RV;

/// The entry points this module calls, taken from the module's own function list.
struct RawModule {
    /// Keeps the library (and so the function pointers below) loaded.
    _library: libloading::Library,
    sign: SignFn,
    close_all_sessions: CloseAllSessionsFn,
}

fn modules() -> &'static Mutex<HashMap<PathBuf, Arc<RawModule>>> {
    static MODULES: OnceLock<Mutex<HashMap<PathBuf, Arc<RawModule>>>> = OnceLock::new();
    MODULES.get_or_init(|| Mutex::new(HashMap::new()))
}

fn load_error(path: &Path, detail: impl Into<String>) -> CallError {
    CallError::Other(HsmError::ModuleLoad {
        path: path.to_path_buf(),
        detail: detail.into(),
    })
}

/// The cached entry points of the module at `path` (the canonical path the context
/// registry loaded).
fn raw_module(path: &Path) -> Result<Arc<RawModule>, CallError> {
    let mut modules = modules()
        .lock()
        .map_err(|_| load_error(path, "raw module cache lock poisoned"))?;
    if let Some(module) = modules.get(path) {
        return Ok(module.clone());
    }
    // SAFETY: loading a PKCS#11 module runs its initialisers; the same library is
    // already loaded by cryptoki from this path, so this only bumps its reference count.
    let library =
        unsafe { libloading::Library::new(path) }.map_err(|e| load_error(path, e.to_string()))?;
    // SAFETY: `C_GetFunctionList` has this signature in every PKCS#11 version (2.x, 3.x).
    let get_function_list = unsafe { library.get::<GetFunctionListFn>(b"C_GetFunctionList\0") }
        .map_err(|e| load_error(path, e.to_string()))?;
    let mut list: *mut CK_FUNCTION_LIST = std::ptr::null_mut();
    // SAFETY: the out-pointer is valid for writes; the module fills it with a pointer
    // to its static function list.
    let rv = unsafe { get_function_list(&mut list) };
    Rv::from(rv)
        .into_result(Function::GetFunctionList)
        .map_err(CallError::Token)?;
    if list.is_null() {
        return Err(load_error(path, "C_GetFunctionList returned no list"));
    }
    // SAFETY: `list` is non-null and points to the module's function list, which
    // lives as long as the library stays loaded (we hold `library`). Read unaligned:
    // some platforms pack PKCS#11 structures.
    let functions = unsafe { std::ptr::read_unaligned(list) };
    let (Some(sign), Some(close_all_sessions)) = (functions.C_Sign, functions.C_CloseAllSessions)
    else {
        return Err(load_error(
            path,
            "the module's function list lacks C_Sign or C_CloseAllSessions",
        ));
    };
    let module = Arc::new(RawModule {
        _library: library,
        sign,
        close_all_sessions,
    });
    modules.insert(path.to_path_buf(), module.clone());
    Ok(module)
}

/// `C_Sign` on `session`, whose signing operation the caller has initialised
/// (`C_SignInit`) and authorised (`C_Login(CKU_CONTEXT_SPECIFIC)`). `capacity` must
/// be at least the signature length (the modulus size for RSA, twice the field size
/// for ECDSA): a second, length-querying call is not made, as some tokens demand the
/// PIN again for it.
pub(super) fn sign_initialised(
    module: &Path,
    session: &Session,
    data: &[u8],
    capacity: usize,
) -> Result<Vec<u8>, CallError> {
    let raw = raw_module(module)?;
    let mut signature = vec![0u8; capacity];
    let mut length = CK_ULONG::try_from(capacity).map_err(CryptokiError::TryFromInt)?;
    let data_len = CK_ULONG::try_from(data.len()).map_err(CryptokiError::TryFromInt)?;
    // SAFETY: `session.handle()` is a live session of this same module instance (see
    // the module docs); `data` is valid for `data_len` bytes and C_Sign only reads it
    // (the non-const pointer is the C prototype's); `signature` is valid for writes of
    // `length` bytes; `length` is a valid in/out pointer. The session is not used by
    // another thread: the pool hands it to one caller at a time.
    let rv = unsafe {
        (raw.sign)(
            session.handle(),
            data.as_ptr().cast_mut(),
            data_len,
            signature.as_mut_ptr(),
            &mut length,
        )
    };
    Rv::from(rv).into_result(Function::Sign)?;
    signature.truncate(usize::try_from(length).map_err(CryptokiError::TryFromInt)?);
    Ok(signature)
}

/// `C_CloseAllSessions` on `slot`: for tests that simulate a token reset.
pub(super) fn close_all_sessions(module: &Path, slot: Slot) -> Result<(), CallError> {
    let raw = raw_module(module)?;
    let slot: CK_SLOT_ID = slot.into();
    // SAFETY: C_CloseAllSessions takes a plain slot id; an unknown id is reported
    // through the return value.
    let rv = unsafe { (raw.close_all_sessions)(slot) };
    Rv::from(rv)
        .into_result(Function::CloseAllSessions)
        .map_err(CallError::Token)
}
