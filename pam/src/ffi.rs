//! The one module with `unsafe`: the libpam calls the module needs (items, environment,
//! conversation, module data), the exported `pam_sm_*` entry points, syslog and `getauxval`.
//!
//! Hand-written rather than from `pamsm` or `pam-bindings`: those return the conversation's answer
//! as a `CStr` and free it without wiping it (the PIN would stay in freed memory), and have no
//! `pam_set_item(PAM_USER)` (the greeter login sets the user it found). The few declarations below
//! follow Linux-PAM's `<security/_pam_types.h>` and `<security/pam_modules.h>`.
//!
//! Everything outside this file sees [`Handle`], whose methods are safe.

#![allow(unsafe_code)]

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr;

use zeroize::{Zeroize, Zeroizing};

use crate::outcome::code;

// Return codes (Linux-PAM `_pam_types.h`).
pub const PAM_SUCCESS: c_int = 0;
pub const PAM_SERVICE_ERR: c_int = 3;
pub const PAM_SYSTEM_ERR: c_int = 4;
pub const PAM_AUTH_ERR: c_int = 7;
pub const PAM_AUTHINFO_UNAVAIL: c_int = 9;
pub const PAM_USER_UNKNOWN: c_int = 10;
pub const PAM_MAXTRIES: c_int = 11;
pub const PAM_SESSION_ERR: c_int = 14;
pub const PAM_CRED_ERR: c_int = 17;
pub const PAM_CONV_ERR: c_int = 19;

/// Flag: the application wants no informational messages.
pub const PAM_SILENT: c_int = 0x8000;

// Item types.
const PAM_SERVICE: c_int = 1;
const PAM_USER: c_int = 2;
const PAM_RHOST: c_int = 4;
const PAM_CONV: c_int = 5;

/// Conversation message styles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i32)]
pub enum Style {
    /// A secret prompt (the PIN).
    PromptEchoOff = 1,
    /// An error to show.
    ErrorMsg = 3,
    /// Information to show.
    TextInfo = 4,
}

#[repr(C)]
struct PamMessage {
    msg_style: c_int,
    msg: *const c_char,
}

#[repr(C)]
struct PamResponse {
    resp: *mut c_char,
    resp_retcode: c_int,
}

type ConvFn = unsafe extern "C" fn(
    num_msg: c_int,
    msg: *mut *const PamMessage,
    resp: *mut *mut PamResponse,
    appdata_ptr: *mut c_void,
) -> c_int;

#[repr(C)]
struct PamConv {
    conv: Option<ConvFn>,
    appdata_ptr: *mut c_void,
}

/// libpam's opaque handle.
#[repr(C)]
pub struct PamHandleT {
    _private: [u8; 0],
}

type CleanupFn =
    unsafe extern "C" fn(pamh: *mut PamHandleT, data: *mut c_void, error_status: c_int);

#[link(name = "pam")]
extern "C" {
    fn pam_get_item(pamh: *const PamHandleT, item_type: c_int, item: *mut *const c_void) -> c_int;
    fn pam_set_item(pamh: *mut PamHandleT, item_type: c_int, item: *const c_void) -> c_int;
    fn pam_getenv(pamh: *mut PamHandleT, name: *const c_char) -> *const c_char;
    fn pam_set_data(
        pamh: *mut PamHandleT,
        module_data_name: *const c_char,
        data: *mut c_void,
        cleanup: Option<CleanupFn>,
    ) -> c_int;
    fn pam_get_data(
        pamh: *const PamHandleT,
        module_data_name: *const c_char,
        data: *mut *const c_void,
    ) -> c_int;
}

/// The name under which this module keeps its state in the PAM handle.
const STATE_NAME: &CStr = c"pam_tessera_state";

/// What an authentication left for setcred and the session phase.
#[derive(Clone)]
pub struct AuthState {
    /// The user it succeeded for.
    pub user: String,
    /// The checked token (None after a reuse, which has no token of its own to hand on).
    pub token: Option<Zeroizing<String>>,
}

/// One PAM call's handle. Valid for the duration of the `pam_sm_*` call that made it.
pub struct Handle {
    raw: *mut PamHandleT,
}

impl Handle {
    /// A string item, `None` when unset or not UTF-8.
    fn item(&self, item_type: c_int) -> Option<String> {
        let mut item: *const c_void = ptr::null();
        // SAFETY: `raw` is the handle libpam passed to this pam_sm_* call; pam_get_item writes a
        // pointer to a NUL-terminated string owned by libpam for string items, valid until the
        // item is set again, which nothing does while we copy it here.
        let rc = unsafe { pam_get_item(self.raw, item_type, &mut item) };
        if rc != PAM_SUCCESS || item.is_null() {
            return None;
        }
        // SAFETY: see above; a non-null string item is NUL-terminated.
        let s = unsafe { CStr::from_ptr(item.cast::<c_char>()) };
        s.to_str().ok().map(str::to_owned)
    }

    /// PAM_SERVICE.
    pub fn service(&self) -> Option<String> {
        self.item(PAM_SERVICE)
    }

    /// PAM_USER as it is: `None` or "" mean no user was named (never prompts, unlike
    /// pam_get_user: a greeter that named nobody gets the device's user).
    pub fn user(&self) -> Option<String> {
        self.item(PAM_USER)
    }

    /// PAM_RHOST.
    pub fn rhost(&self) -> Option<String> {
        self.item(PAM_RHOST)
    }

    /// Sets PAM_USER (the greeter login, after a checked token named the user).
    pub fn set_user(&self, user: &str) -> Result<(), c_int> {
        let user = CString::new(user).map_err(|_| PAM_SYSTEM_ERR)?;
        // SAFETY: libpam copies the string (pam_set_item strdup()s string items).
        let rc = unsafe { pam_set_item(self.raw, PAM_USER, user.as_ptr().cast()) };
        if rc == PAM_SUCCESS {
            Ok(())
        } else {
            Err(rc)
        }
    }

    /// A variable of the PAM environment (pam_getenv), not the process's.
    pub fn getenv(&self, name: &str) -> Option<String> {
        let name = CString::new(name).ok()?;
        // SAFETY: pam_getenv returns NULL or a pointer into libpam's environment list, valid
        // until the environment changes; copied at once.
        let value = unsafe { pam_getenv(self.raw, name.as_ptr()) };
        if value.is_null() {
            return None;
        }
        // SAFETY: a non-null value is a NUL-terminated string (see above).
        let s = unsafe { CStr::from_ptr(value) };
        s.to_str().ok().map(str::to_owned)
    }

    /// One message through the application's conversation function. For a prompt, the answer
    /// (wiped in libc's buffer before it is freed); `Err` when the application's conversation
    /// failed or there is none.
    pub fn converse(&self, style: Style, text: &str) -> Result<Option<Zeroizing<String>>, c_int> {
        let mut conv: *const c_void = ptr::null();
        // SAFETY: PAM_CONV is a `struct pam_conv *` owned by libpam for the handle's life.
        let rc = unsafe { pam_get_item(self.raw, PAM_CONV, &mut conv) };
        if rc != PAM_SUCCESS || conv.is_null() {
            return Err(PAM_CONV_ERR);
        }
        // SAFETY: non-null PAM_CONV points to a valid pam_conv (see above).
        let conv = unsafe { &*conv.cast::<PamConv>() };
        let Some(conv_fn) = conv.conv else {
            return Err(PAM_CONV_ERR);
        };
        let text = CString::new(text.replace('\0', " ")).map_err(|_| PAM_CONV_ERR)?;
        let message = PamMessage {
            msg_style: style as c_int,
            msg: text.as_ptr(),
        };
        let mut messages = [&message as *const PamMessage];
        let mut response: *mut PamResponse = ptr::null_mut();
        // SAFETY: one valid message (which outlives the call); the application allocates the
        // response array with malloc and hands its ownership to us (Linux-PAM's convention).
        let rc = unsafe { conv_fn(1, messages.as_mut_ptr(), &mut response, conv.appdata_ptr) };
        let answer = if response.is_null() {
            None
        } else {
            // SAFETY: a non-null response is an array of one pam_response, malloc'd, ours.
            let resp = unsafe { &mut *response };
            let answer = if resp.resp.is_null() {
                None
            } else {
                // SAFETY: resp.resp is a malloc'd NUL-terminated string, ours to wipe and free.
                let (len, copy) = {
                    let bytes = unsafe { CStr::from_ptr(resp.resp) }.to_bytes();
                    let copy = Zeroizing::new(String::from_utf8_lossy(bytes).into_owned());
                    (bytes.len(), copy)
                };
                // SAFETY: `len` bytes before the NUL belong to the string; wiped, then freed.
                unsafe {
                    std::slice::from_raw_parts_mut(resp.resp.cast::<u8>(), len).zeroize();
                    libc::free(resp.resp.cast());
                }
                Some(copy)
            };
            // SAFETY: the array itself is malloc'd by the application and ours to free.
            unsafe { libc::free(response.cast()) };
            answer
        };
        if rc != PAM_SUCCESS {
            return Err(PAM_CONV_ERR);
        }
        Ok(answer)
    }

    /// Keeps `state` in the handle for the calls that follow (setcred, open_session); a previous
    /// state is dropped (and its token wiped) by libpam calling its cleanup.
    pub fn set_state(&self, state: AuthState) -> Result<(), c_int> {
        let raw = Box::into_raw(Box::new(state));
        // SAFETY: ownership of `raw` passes to libpam, which hands it back to `cleanup_state`
        // exactly once (at pam_end or when replaced).
        let rc = unsafe {
            pam_set_data(
                self.raw,
                STATE_NAME.as_ptr(),
                raw.cast(),
                Some(cleanup_state),
            )
        };
        if rc != PAM_SUCCESS {
            // SAFETY: libpam did not take it; we still own `raw`.
            drop(unsafe { Box::from_raw(raw) });
            return Err(rc);
        }
        Ok(())
    }

    /// Forgets the state (a failed authentication must not leave an earlier success behind).
    pub fn clear_state(&self) {
        // SAFETY: NULL data with no cleanup replaces (and cleans up) what was there.
        unsafe { pam_set_data(self.raw, STATE_NAME.as_ptr(), ptr::null_mut(), None) };
    }

    /// A copy of the state an authentication in this handle left, if any.
    pub fn state(&self) -> Option<AuthState> {
        let mut data: *const c_void = ptr::null();
        // SAFETY: the only data under STATE_NAME is a Box<AuthState> set by `set_state` (or NULL).
        let rc = unsafe { pam_get_data(self.raw, STATE_NAME.as_ptr(), &mut data) };
        if rc != PAM_SUCCESS || data.is_null() {
            return None;
        }
        // SAFETY: see above; it lives until replaced or pam_end, not during this copy.
        Some(unsafe { &*data.cast::<AuthState>() }.clone())
    }
}

unsafe extern "C" fn cleanup_state(_pamh: *mut PamHandleT, data: *mut c_void, _status: c_int) {
    if !data.is_null() {
        // SAFETY: `data` came from Box::into_raw in set_state; libpam calls this once. Dropping it
        // wipes the token (Zeroizing).
        drop(unsafe { Box::from_raw(data.cast::<AuthState>()) });
    }
}

/// Whether the process runs with elevated rights it did not get from its caller (setuid, setgid,
/// capabilities): getauxval(AT_SECURE), the test libdbus and glibc's secure_getenv use.
pub fn at_secure() -> bool {
    // SAFETY: getauxval has no preconditions.
    unsafe { libc::getauxval(libc::AT_SECURE) != 0 }
}

/// Syslog levels this module uses.
#[derive(Debug, Clone, Copy)]
pub enum Level {
    Err,
    Warning,
    Notice,
    Debug,
}

/// One line to syslog (facility authpriv), prefixed "pam_tessera: ". Never to the application's
/// stdout. The application's openlog() identity is left alone.
pub fn syslog(level: Level, message: &str) {
    let priority = match level {
        Level::Err => libc::LOG_ERR,
        Level::Warning => libc::LOG_WARNING,
        Level::Notice => libc::LOG_NOTICE,
        Level::Debug => libc::LOG_DEBUG,
    };
    let Ok(line) = CString::new(format!("pam_tessera: {}", message.replace('\0', " "))) else {
        return;
    };
    // SAFETY: a constant "%s" format with one valid C string argument.
    unsafe { libc::syslog(libc::LOG_AUTHPRIV | priority, c"%s".as_ptr(), line.as_ptr()) };
}

/// The module's arguments as strings (non-UTF-8 ones become U+FFFD and are then unknown options).
///
/// # Safety
/// `argv` must hold `argc` valid NUL-terminated strings (libpam's guarantee).
unsafe fn args(argc: c_int, argv: *const *const c_char) -> Vec<String> {
    let n = usize::try_from(argc).unwrap_or(0);
    if argv.is_null() {
        return Vec::new();
    }
    (0..n)
        .filter_map(|i| {
            // SAFETY: i < argc (caller's guarantee).
            let p = unsafe { *argv.add(i) };
            // SAFETY: each argv entry is a NUL-terminated string (caller's guarantee).
            (!p.is_null()).then(|| unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
        })
        .collect()
}

/// Runs one entry point: a panic (there should be none) is a failure, never unwinding into C.
fn entry(
    pamh: *mut PamHandleT,
    flags: c_int,
    argc: c_int,
    argv: *const *const c_char,
    what: fn(&Handle, c_int, &[String]) -> c_int,
    on_panic: c_int,
) -> c_int {
    if pamh.is_null() {
        return PAM_SYSTEM_ERR;
    }
    let handle = Handle { raw: pamh };
    // SAFETY: libpam passes argc/argv of the module's configuration line.
    let args = unsafe { args(argc, argv) };
    match catch_unwind(AssertUnwindSafe(|| what(&handle, flags, &args))) {
        Ok(rc) => rc,
        Err(_) => {
            syslog(Level::Err, "internal error (panic); failing closed");
            on_panic
        }
    }
}

/// One exported PAM entry point, `extern "C" fn(pamh, flags, argc, argv) -> c_int`, running
/// `$what` through [`entry`], which answers `$on_panic` if it panics.
macro_rules! entry_point {
    ($(#[$doc:meta])* $name:ident => $what:expr, $on_panic:expr) => {
        $(#[$doc])*
        #[no_mangle]
        pub extern "C" fn $name(
            pamh: *mut PamHandleT,
            flags: c_int,
            argc: c_int,
            argv: *const *const c_char,
        ) -> c_int {
            entry(pamh, flags, argc, argv, $what, $on_panic)
        }
    };
}

entry_point!(
    /// PAM entry point: authentication.
    pam_sm_authenticate => |h, f, a| code(crate::auth::authenticate(h, f, a)), PAM_AUTH_ERR
);
entry_point!(
    /// PAM entry point: credentials (nothing to set; success only after a success in this handle).
    pam_sm_setcred => crate::session::setcred, PAM_CRED_ERR
);
entry_point!(
    /// PAM entry point: session start.
    pam_sm_open_session => crate::session::open_session, PAM_SESSION_ERR
);
entry_point!(
    /// PAM entry point: session end.
    pam_sm_close_session => crate::session::close_session, PAM_SESSION_ERR
);
