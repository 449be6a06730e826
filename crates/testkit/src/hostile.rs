//! What every service's hostile-input tests share: the hostile values (bad
//! ids, bad idempotency keys, garbage bytes), the framing cases and the runner
//! for malformed raw requests, the paging checks, and for generated requests
//! the proptest strategies, config, runtime and the codes a refusal may have.
//! Each service's `hostile.rs` keeps only its own cases.

use std::future::Future;

use emporium_common::rpc::{Channel, Code, Status};
use proptest::{
    prelude::*,
    test_runner::{RngSeed, TestCaseError},
};
use uuid::Uuid;

use crate::{
    invalid,
    raw::{frame, framed, raw},
    scan, violated_fields,
};

/// The server's receive limit (`server.max_message_bytes`, default 4 MiB).
pub const LIMIT: usize = 4 * 1024 * 1024;

/// The codes a hostile request may get; anything else (INTERNAL, UNKNOWN, a
/// transport error) fails the property.
pub const EXPECTED: [Code; 6] = [
    Code::InvalidArgument,
    Code::NotFound,
    Code::AlreadyExists,
    Code::FailedPrecondition,
    Code::PermissionDenied,
    Code::OutOfRange,
];

/// Bytes from a fixed-seed xorshift: "random" garbage, the same on every run.
pub fn garbage(n: usize, mut seed: u64) -> Vec<u8> {
    (0..n)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed as u8
        })
        .collect()
}

/// Ids that are not the canonical hyphenated UUID `valid`, in every hostile
/// shape (the empty id is left out: some fields read it as "mine").
pub fn bad_ids(valid: &str) -> Vec<String> {
    vec![
        "\0".into(),
        format!("{valid}\0"),
        format!("\0{}", &valid[1..]),
        // 36 bytes, but not ASCII.
        format!("{}é", &valid[..34]),
        format!("\u{202E}{}", &valid[3..]),
        format!("{}🦀", &valid[..32]),
        // Combining mark on a hex digit.
        format!("{}\u{0301}", &valid[..34]),
        // Fullwidth digits look like a UUID to a person.
        valid.replace('0', "０"),
        "x".repeat(10_000),
        "a".repeat(1 << 20),
        "' OR '1'='1".into(),
    ]
}

/// Idempotency keys that break the one rule (1 to 128 visible ASCII
/// characters, no spaces: `emporium_common::types::IdempotencyKey`).
pub fn bad_keys() -> Vec<String> {
    vec![
        String::new(),
        "\0".into(),
        "key\0".into(),
        "tab\t".into(),
        "del\u{7f}".into(),
        "ключ".into(),
        "🔑".into(),
        "\u{202E}key".into(),
        "k".repeat(129),
        "k".repeat(1 << 20),
    ]
}

/// Fixed nasties every text field is tried with.
pub const NASTY: [&str; 14] = [
    "",
    " ",
    "\0",
    "a\0b",
    "\u{202E}abc",
    "\u{200B}",
    "\u{FEFF}",
    "👩‍👩‍👧‍👦",
    "e\u{301}\u{302}",
    "\r\n",
    "' OR 1=1 --",
    "%s%n",
    "../..",
    "\u{10FFFF}",
];

/// Text a client could send: the [`NASTY`] values, arbitrary unicode (NUL and
/// control characters included), long runs, and (mostly) `valid` values.
pub fn text(valid: impl Strategy<Value = String> + 'static) -> BoxedStrategy<String> {
    text_with(&[], valid)
}

/// [`text`] with nasties of the service's own after the shared ones.
pub fn text_with(
    extra: &[&'static str],
    valid: impl Strategy<Value = String> + 'static,
) -> BoxedStrategy<String> {
    let nasty: Vec<&'static str> = NASTY.iter().chain(extra).copied().collect();
    prop_oneof![
        3 => prop::sample::select(nasty).prop_map(str::to_owned),
        3 => any::<String>(),
        2 => prop::collection::vec(any::<char>(), 0..64).prop_map(String::from_iter),
        1 => (0usize..12_000, any::<char>()).prop_map(|(n, c)| c.to_string().repeat(n)),
        24 => valid,
    ]
    .boxed()
}

/// Hostile [`text`] around ids: one of `known`, or any well-formed UUID.
pub fn id(known: Vec<String>) -> BoxedStrategy<String> {
    text(prop_oneof![
        prop::sample::select(known),
        any::<u128>().prop_map(|n| Uuid::from_u128(n).to_string()),
    ])
}

/// The config of a generated-requests property: 64 cases from a fixed `seed`
/// (one per service, so runs repeat exactly), nothing persisted.
pub fn proptest_config(seed: u64, max_shrink_iters: u32) -> ProptestConfig {
    ProptestConfig {
        cases: 64,
        failure_persistence: None,
        rng_seed: RngSeed::Fixed(seed),
        max_shrink_iters,
        ..ProptestConfig::default()
    }
}

/// One malformed request: `(what, method, request body with its framing, the
/// code tonic answers)`.
pub type Malformed = (&'static str, &'static str, Vec<u8>, Code);

/// Sends each malformed request to `path(method)` over `channel` with `token`
/// and asserts its code and that the status leaks nothing; after each one,
/// `normal(what)` must show the same connection still serving a normal call.
/// tonic refuses these before any handler runs, with messages of its own (for
/// protobuf errors, prost's text naming the message, field and wire type), so
/// only the leak markers are checked.
pub async fn refuse_malformed<F, Fut>(
    channel: &Channel,
    path: impl Fn(&str) -> String,
    token: impl Fn() -> Option<String>,
    cases: Vec<Malformed>,
    normal: F,
) where
    F: FnMut(&'static str) -> Fut,
    Fut: Future<Output = ()>,
{
    // A token per case: service tokens work once.
    let tokens: Vec<Option<String>> = cases.iter().map(|_| token()).collect();
    let cases = cases
        .into_iter()
        .zip(&tokens)
        .map(|((what, method, body, code), token)| (what, method, token.as_deref(), body, code))
        .collect();
    refuse_malformed_each(channel, path, cases, normal).await;
}

/// A [`Malformed`] request with a token of its own: `(what, method, token,
/// body, code)`.
pub type MalformedAs<'a> = (&'static str, &'a str, Option<&'a str>, Vec<u8>, Code);

/// [`refuse_malformed`] with a token of each case's own.
pub async fn refuse_malformed_each<F, Fut>(
    channel: &Channel,
    path: impl Fn(&str) -> String,
    cases: Vec<MalformedAs<'_>>,
    mut normal: F,
) where
    F: FnMut(&'static str) -> Fut,
    Fut: Future<Output = ()>,
{
    for (what, method, token, body, code) in cases {
        let st = raw(channel, &path(method), token, body)
            .await
            .expect_err(what);
        assert_eq!(st.code(), code, "{what}: {st:?}");
        scan(&st);
        // The same connection still serves a normal call.
        normal(what).await;
    }
}

/// Page sizes of a listing: negative ones are refused naming `page_size`, and
/// the largest is clamped to a page of all `items`. `list(page_size)` asks
/// for a first page and returns how many items it holds.
pub async fn page_sizes<F, Fut>(mut list: F, items: usize)
where
    F: FnMut(i32) -> Fut,
    Fut: Future<Output = Result<usize, Status>>,
{
    for size in [i32::MIN, -1] {
        invalid(list(size).await, &["page_size"]);
    }
    let n = list(i32::MAX)
        .await
        .expect("the largest page size is clamped");
    assert_eq!(n, items);
}

/// Page tokens that are plain garbage, and well-formed tokens of `listing`
/// (the token format is public knowledge) around each hostile cursor.
pub fn page_tokens(listing: &str, cursors: &[&str]) -> Vec<String> {
    let mut tokens = vec!["\0".to_owned(), "t".repeat(1 << 20)];
    tokens.extend(
        cursors
            .iter()
            .map(|cursor| emporium_common::paging::encode_token(listing, cursor)),
    );
    tokens
}

/// Every token is refused naming `page_token`; `list(page_token)` asks for a
/// page from it.
pub async fn page_tokens_are_refused<F, Fut>(tokens: Vec<String>, mut list: F)
where
    F: FnMut(String) -> Fut,
    Fut: Future<Output = Result<usize, Status>>,
{
    for token in tokens {
        let st = list(token.clone()).await.expect_err(&format!("{token:?}"));
        assert_eq!(st.code(), Code::InvalidArgument, "{token:?}: {st:?}");
        assert_eq!(violated_fields(&st), ["page_token"]);
        scan(&st);
    }
}

/// [`page_sizes`], then [`page_tokens_are_refused`] for `tokens` asked with a
/// page size of `page_size`: `list(page_size, page_token)` asks for a page
/// and returns how many items it holds.
pub async fn paging<F, Fut>(mut list: F, items: usize, tokens: Vec<String>, page_size: i32)
where
    F: FnMut(i32, String) -> Fut,
    Fut: Future<Output = Result<usize, Status>>,
{
    page_sizes(|size| list(size, String::new()), items).await;
    page_tokens_are_refused(tokens, |token| list(page_size, token)).await;
}

/// `n` bytes of [`garbage`] from `seed`, honestly framed.
pub fn random_garbage(what: &'static str, method: &'static str, n: usize, seed: u64) -> Malformed {
    (what, method, framed(&garbage(n, seed)), Code::Internal)
}

/// A frame whose length prefix claims `claimed` bytes but carries `message`,
/// which is shorter.
pub fn short_frame(method: &'static str, claimed: u32, message: &[u8]) -> Malformed {
    (
        "frame shorter than its length prefix",
        method,
        frame(0, claimed, message),
        Code::Internal,
    )
}

/// An empty frame flagged as compressed, with no `grpc-encoding` header.
pub fn compressed_without_encoding(method: &'static str) -> Malformed {
    (
        "compressed flag without grpc-encoding",
        method,
        frame(1, 0, &[]),
        Code::Internal,
    )
}

/// An empty frame with a compression `flag` that does not exist.
pub fn unknown_compression(method: &'static str, flag: u8) -> Malformed {
    (
        "unknown compression flag",
        method,
        frame(flag, 0, &[]),
        Code::Internal,
    )
}

/// A length prefix announcing 4 GiB: refused from the 5 header bytes alone.
pub fn four_gib_prefix(method: &'static str) -> Malformed {
    (
        "length prefix of 4 GiB",
        method,
        frame(0, u32::MAX, &[]),
        Code::OutOfRange,
    )
}

/// A [`Malformed`] case sent with `token`.
pub fn with_token(token: Option<&str>, (what, method, body, code): Malformed) -> MalformedAs<'_> {
    (what, method, token, body, code)
}

/// The runtime a generated-requests property drives its calls on (proptest's
/// cases are synchronous): multi-thread, two workers.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a test runtime")
}

/// A generated request's refusal: one of the [`EXPECTED`] codes (or `also`,
/// where a service documents one more), leaking nothing.
pub fn expected_refusal(st: &Status, also: Option<Code>) -> Result<(), TestCaseError> {
    prop_assert!(
        EXPECTED.contains(&st.code()) || Some(st.code()) == also,
        "unexpected status {st:?}"
    );
    scan(st);
    Ok(())
}
