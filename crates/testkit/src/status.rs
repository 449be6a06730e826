//! Checks of the statuses a service answers: the code, the fields a
//! BadRequest names, and that nothing internal leaks.

pub use emporium_common::testing::LEAK_MARKERS;

/// Fails the test when `message` (a status message, or any text a service
/// shows a client) contains one of the [`LEAK_MARKERS`].
#[track_caller]
pub fn assert_no_leak(message: &str) {
    if let Some(marker) = emporium_common::testing::leak_in(message) {
        panic!("message leaks internals ({marker:?}): {message:?}");
    }
}

/// The fields named by a status's `google.rpc.BadRequest` detail, in order.
pub fn violated_fields(s: &emporium_common::rpc::Status) -> Vec<String> {
    use emporium_common::rpc::StatusExt as _;
    s.get_details_bad_request()
        .map(|b| b.field_violations.into_iter().map(|v| v.field).collect())
        .unwrap_or_default()
}

/// Fails when a status, its message or its details leak internals.
#[track_caller]
pub fn scan(s: &emporium_common::rpc::Status) {
    assert_no_leak(s.message());
    assert_no_leak(&String::from_utf8_lossy(s.details()));
}

/// Asserts the error code, scans the status, and returns it.
#[track_caller]
pub fn refused<T: std::fmt::Debug>(
    r: Result<T, emporium_common::rpc::Status>,
    code: emporium_common::rpc::Code,
) -> emporium_common::rpc::Status {
    let s = r.expect_err("expected an error status");
    assert_eq!(s.code(), code, "{s:?}");
    scan(&s);
    s
}

/// Asserts INVALID_ARGUMENT with a BadRequest naming exactly `fields`.
#[track_caller]
pub fn invalid<T: std::fmt::Debug>(r: Result<T, emporium_common::rpc::Status>, fields: &[&str]) {
    let s = refused(r, emporium_common::rpc::Code::InvalidArgument);
    assert_eq!(violated_fields(&s), fields, "{s:?}");
}
