//! Hostile input: malformed protobuf, wrong wire types, unknown enum values,
//! oversized messages, extreme integers, empty, overlong, NUL and unicode text.
//! Every answer is a proper gRPC status whose message leaks nothing internal,
//! and a normal call on the same connection works right after.

use emporium_common::rpc::Code;
use emporium_testkit::{
    TestDb, admin_token, assert_no_leak, backend_tests, bearer,
    hostile::{
        self, LIMIT, Malformed, compressed_without_encoding, expected_refusal, four_gib_prefix,
        page_sizes, proptest_config, random_garbage, refuse_malformed, runtime, short_frame,
        unknown_compression,
    },
    invalid,
    raw::{framed, raw},
    refused, scan,
};
use pb::user_service_client::UserServiceClient;
use proptest::prelude::*;
use prost::Message as _;
use uuid::Uuid;

use crate::{app, pb, violated_fields};

backend_tests!(hostile_values_are_refused_field_by_field);

const CREATE_USER: &str = "/emporium.user.v1.UserService/CreateUser";
const UPDATE_USER: &str = "/emporium.user.v1.UserService/UpdateUser";
const GET_USER: &str = "/emporium.user.v1.UserService/GetUser";
const LIST_USERS: &str = "/emporium.user.v1.UserService/ListUsers";

/// Field 1 (`email`, a string) as a varint: a wrong wire type.
#[derive(Clone, PartialEq, prost::Message)]
struct EmailAsVarint {
    #[prost(uint64, tag = "1")]
    email: u64,
}

/// Fields 2 and 3 (strings) as fixed64 and fixed32.
#[derive(Clone, PartialEq, prost::Message)]
struct NameAsFixed {
    #[prost(fixed64, tag = "2")]
    name: u64,
    #[prost(fixed32, tag = "3")]
    password: u32,
}

/// UpdateUserRequest with field 5 (`roles`, a nested RoleSet) replaced by raw bytes.
#[derive(Clone, PartialEq, prost::Message)]
struct RolesAsBytes {
    #[prost(string, tag = "1")]
    user_id: String,
    #[prost(bytes = "vec", tag = "5")]
    roles: Vec<u8>,
}

/// A CreateUserRequest with a field this version does not know (tag 99).
#[derive(Clone, PartialEq, prost::Message)]
struct WithUnknownField {
    #[prost(string, tag = "1")]
    email: String,
    #[prost(string, tag = "99")]
    extra: String,
}

// ---- 0. the leak scanner itself ----

#[test]
fn the_leak_scanner_catches_internals_and_passes_plain_messages() {
    let leaks = [
        "error returned from database: SELECT id FROM users WHERE email_key = $1",
        "sqlx: pool timed out",
        "error returned from database: (code: 1) SQLite failure",
        "db error: ERROR: invalid byte sequence for encoding \"UTF8\": 0x00 (Postgres)",
        "thread 'tokio-runtime-worker' panicked at services/user/src/store.rs:42:9",
        "note: run with `RUST_BACKTRACE=1` environment variable to display a backtrace",
        "stack backtrace:\n   0: rust_begin_unwind",
        "cannot open /tmp/.tmpA1b2C3/test.db",
        "token Bearer eyJhbGciOi is invalid",
    ];
    for leak in leaks {
        let caught = std::panic::catch_unwind(|| assert_no_leak(leak));
        assert!(caught.is_err(), "not caught: {leak:?}");
    }
    for plain in [
        "invalid request: email: must contain @; name: is required",
        "user not found",
        "invalid or expired access token",
        "internal error",
        "Error, decoded message length too large: found 4294967295 bytes, the limit is: 4194304 bytes",
        "rate limit exceeded, retry in 20 ms",
    ] {
        assert_no_leak(plain);
    }
}

// ---- 1. malformed bytes through a real socket ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_bytes_get_a_grpc_error_and_the_connection_keeps_working() {
    let app = app(TestDb::sqlite()).await;
    let channel = app.svc.channel().await;
    let client = UserServiceClient::new(channel.clone());
    let admin = app.admin_token.clone();
    let me = app.admin_id.clone();

    let varint_email = EmailAsVarint { email: 42 }.encode_to_vec();
    let fixed_name = NameAsFixed {
        name: u64::MAX,
        password: 7,
    }
    .encode_to_vec();
    let mut bad_utf8 = pb::CreateUserRequest {
        email: "x@example.com".into(),
        ..Default::default()
    }
    .encode_to_vec();
    bad_utf8[2] = 0xff; // first byte of the email: no longer UTF-8
    // Field 1, length-delimited, claims 100 bytes; 3 follow.
    let truncated_field = vec![0x0a, 100, b'a', b'b', b'c'];
    // Tag 0 is never valid.
    let tag_zero = vec![0x00, 0x01];
    // ListUsersRequest.page_size (a varint) of eleven 0xff bytes: over 64 bits.
    let long_varint = [vec![0x08], vec![0xff; 11]].concat();
    // Wire types 6 and 7 do not exist.
    let wire_type_7 = vec![0x0f, 0x00];
    let roles_garbage = RolesAsBytes {
        user_id: me.clone(),
        roles: vec![0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f],
    }
    .encode_to_vec();
    let message = pb::CreateUserRequest::default().encode_to_vec();

    // (what, path, request body, code tonic answers). The messages are
    // tonic's own: for protobuf errors, prost's text naming the message, field
    // and wire type (e.g. "failed to decode Protobuf message:
    // CreateUserRequest.email: invalid wire type: Varint (expected
    // LengthDelimited)"). Only the leak markers are checked here; whether that
    // text should reach clients is an open question.
    let cases: Vec<Malformed> = vec![
        (
            "string field as varint",
            CREATE_USER,
            framed(&varint_email),
            Code::Internal,
        ),
        (
            "string fields as fixed64/32",
            CREATE_USER,
            framed(&fixed_name),
            Code::Internal,
        ),
        (
            "invalid UTF-8 in a string",
            CREATE_USER,
            framed(&bad_utf8),
            Code::Internal,
        ),
        (
            "field longer than the message",
            CREATE_USER,
            framed(&truncated_field),
            Code::Internal,
        ),
        ("tag 0", CREATE_USER, framed(&tag_zero), Code::Internal),
        (
            "varint over 64 bits",
            LIST_USERS,
            framed(&long_varint),
            Code::Internal,
        ),
        (
            "wire type 7",
            CREATE_USER,
            framed(&wire_type_7),
            Code::Internal,
        ),
        (
            "garbage in a nested message",
            UPDATE_USER,
            framed(&roles_garbage),
            Code::Internal,
        ),
        random_garbage("random garbage", UPDATE_USER, 512, 0x5eed),
        short_frame(CREATE_USER, 1000, &message),
        (
            "half a frame header",
            CREATE_USER,
            vec![0, 0, 0],
            Code::Internal,
        ),
        ("no message at all", CREATE_USER, Vec::new(), Code::Internal),
        compressed_without_encoding(CREATE_USER),
        unknown_compression(CREATE_USER, 7),
        // A prefix announcing 4 GiB is refused from the 5 header bytes alone.
        four_gib_prefix(CREATE_USER),
    ];
    refuse_malformed(
        &channel,
        str::to_owned,
        || Some(admin.clone()),
        cases,
        |what| {
            let (mut client, admin, me) = (client.clone(), admin.clone(), me.clone());
            async move {
                let user = client
                    .get_user(bearer(
                        pb::GetUserRequest {
                            user_id: me.clone(),
                        },
                        &admin,
                    ))
                    .await
                    .unwrap_or_else(|e| panic!("normal call after {what}: {e:?}"));
                assert_eq!(user.into_inner().user.unwrap().id, me);
            }
        },
    )
    .await;

    // Well-formed bytes the schema does not expect are not errors: unknown
    // fields are skipped, and validation answers as usual.
    let unknown = WithUnknownField {
        email: "not-an-email".into(),
        extra: "from a newer client".into(),
    }
    .encode_to_vec();
    let s = raw(&channel, CREATE_USER, None, framed(&unknown))
        .await
        .expect_err("validation");
    assert_eq!(s.code(), Code::InvalidArgument, "{s:?}");
    assert_eq!(violated_fields(&s), ["email", "name", "password"]);
    // And a hand-made frame of a real message works like the generated client.
    let ok = raw(
        &channel,
        GET_USER,
        Some(&admin),
        framed(
            &pb::GetUserRequest {
                user_id: me.clone(),
            }
            .encode_to_vec(),
        ),
    )
    .await
    .expect("a hand-made valid request");
    let got = pb::GetUserResponse::decode(ok.as_slice()).unwrap();
    assert_eq!(got.user.unwrap().id, me);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_messages_are_out_of_range_and_the_connection_keeps_working() {
    let mut app = app(TestDb::sqlite()).await;
    let channel = app.svc.channel().await;
    let mut client = UserServiceClient::new(channel.clone());
    let admin = app.admin_token.clone();
    let me = app.admin_id.clone();

    // Just over the limit, through the generated client (which sends any size).
    let over = client
        .create_user(pb::CreateUserRequest {
            email: "big@example.com".into(),
            name: "n".repeat(LIMIT + 1),
            password: "password-1".into(),
        })
        .await;
    refused(over, Code::OutOfRange);
    client
        .get_user(bearer(
            pb::GetUserRequest {
                user_id: me.clone(),
            },
            &admin,
        ))
        .await
        .expect("a normal call after an oversized one");

    // Just under the limit: decoded, then refused by validation.
    let under = client
        .create_user(pb::CreateUserRequest {
            email: "big@example.com".into(),
            name: "n".repeat(LIMIT - 64),
            password: "password-1".into(),
        })
        .await;
    invalid(under, &["name"]);

    // The connection is intact: nothing was created, sign-up still works.
    let user = app.signup("after@example.com", "After", "password-1").await;
    assert_eq!(user.email, "after@example.com");
}

// ---- 2. hostile values through the generated client ----

/// Ids that are not the canonical hyphenated UUID, in every hostile shape:
/// the shared ones, the empty id, and the right hex digits in the wrong case
/// with the wrong separators.
fn bad_ids(valid: &str) -> Vec<String> {
    let mut ids = hostile::bad_ids(valid);
    ids.insert(0, String::new());
    ids.push(valid.to_uppercase().replace('-', "_"));
    ids
}

async fn hostile_values_are_refused_field_by_field(db: TestDb) {
    let mut app = app(db).await;
    let admin = app.admin_token.clone();
    let me = app.admin_id.clone();
    let mut c = app.client.clone();

    // Ids: GetUser, DeleteUser and UpdateUser name the field.
    for id in bad_ids(&me) {
        invalid(
            c.get_user(bearer(
                pb::GetUserRequest {
                    user_id: id.clone(),
                },
                &admin,
            ))
            .await,
            &["user_id"],
        );
        invalid(
            c.delete_user(bearer(
                pb::DeleteUserRequest {
                    user_id: id.clone(),
                },
                &admin,
            ))
            .await,
            &["user_id"],
        );
        invalid(
            c.update_user(bearer(
                pb::UpdateUserRequest {
                    user_id: id.clone(),
                    ..Default::default()
                },
                &admin,
            ))
            .await,
            &["user_id"],
        );
    }

    // Sign-up fields: empty, overlong, NUL, control characters.
    let cases: [(&str, &str, &str, &[&str]); 8] = [
        ("", "", "", &["email", "name", "password"]),
        ("a\0@example.com", "ok", "password-1", &["email"]),
        ("ok@example.com", "\0", "password-1", &["name"]),
        ("ok@example.com", "bell\u{7}", "password-1", &["name"]),
        ("ok@example.com", "ok", "\0\0\0\0\0\0\0\0", &["password"]),
        ("ok@example.com", "ok", "short", &["password"]),
        ("ok@example.com", "   ", "password-1", &["name"]),
        ("ok@example.com", "ok", "", &["password"]),
    ];
    for (email, name, password, fields) in cases {
        let r = c
            .create_user(pb::CreateUserRequest {
                email: email.into(),
                name: name.into(),
                password: password.into(),
            })
            .await;
        invalid(r, fields);
    }
    let ten_k = "x".repeat(10_000);
    let one_mib = "é".repeat(1 << 19);
    for long in [&ten_k, &one_mib] {
        let r = c
            .create_user(pb::CreateUserRequest {
                email: format!("{long}@example.com"),
                name: long.clone(),
                password: long.clone(),
            })
            .await;
        invalid(r, &["email", "name", "password"]);
    }
    // Names are display text: emoji, combining marks and scripts are kept
    // exactly (only surrounding whitespace is trimmed).
    for (i, name) in ["👩‍👩‍👧‍👦 family", "e\u{301}\u{302}\u{303}", "Ωμέγα 日本"]
        .into_iter()
        .enumerate()
    {
        let user = app
            .signup(&format!("unicode-{i}@example.com"), name, "password-1")
            .await;
        assert_eq!(user.name, name);
        let back = app.get(&user.id, &admin).await.unwrap();
        assert_eq!(back.name, name);
    }
    let mut c = app.client.clone();

    // Unknown enum values in `roles`, each named by its index.
    for bad in [99, -1, 0, i32::MAX, i32::MIN] {
        let r = c
            .update_user(bearer(
                pb::UpdateUserRequest {
                    user_id: me.clone(),
                    roles: Some(pb::RoleSet {
                        roles: vec![pb::Role::Admin as i32, bad],
                    }),
                    ..Default::default()
                },
                &admin,
            ))
            .await;
        invalid(r, &["roles.roles[1]"]);
    }
    invalid(
        c.update_user(bearer(
            pb::UpdateUserRequest {
                user_id: me.clone(),
                roles: Some(pb::RoleSet { roles: vec![] }),
                ..Default::default()
            },
            &admin,
        ))
        .await,
        &["roles.roles"],
    );

    // Page sizes: negative is refused, huge is clamped.
    page_sizes(
        |page_size| {
            let (mut c, admin) = (c.clone(), admin.clone());
            async move {
                let req = pb::ListUsersRequest {
                    page_size,
                    page_token: String::new(),
                };
                c.list_users(bearer(req, &admin))
                    .await
                    .map(|r| r.into_inner().users.len())
            }
        },
        4,
    )
    .await;

    // Page tokens: garbage, NUL, overlong, and well-formed tokens for this
    // listing whose cursor is hostile (the token format is public knowledge:
    // base64url of "users.v1\n<time>/<id>").
    let (oldest, nul) = (format!("{}/{me}", i64::MIN), format!("1/{me}\0"));
    let mut tokens = hostile::page_tokens(
        "users.v1",
        &["garbage", &oldest, "1/\0", &nul, "1/\u{202E}🦀"],
    );
    tokens.push("!!!".to_owned());
    for token in tokens {
        let r = c
            .list_users(bearer(
                pb::ListUsersRequest {
                    page_size: 10,
                    page_token: token.clone(),
                },
                &admin,
            ))
            .await;
        match r {
            // A cursor that parses pages on from where it points.
            Ok(_) => {}
            Err(s) => {
                assert_eq!(s.code(), Code::InvalidArgument, "{token:?}: {s:?}");
                assert_eq!(violated_fields(&s), ["page_token"]);
                scan(&s);
            }
        }
    }

    // Sign-in with hostile credentials is the one documented answer.
    for (email, password) in [
        ("\0", "password-1"),
        ("a\0@example.com", "password-1"),
        ("\u{202E}@example.com", "\0"),
        (ten_k.as_str(), ten_k.as_str()),
    ] {
        let r = c
            .authenticate(pb::AuthenticateRequest {
                email: email.into(),
                password: password.into(),
            })
            .await;
        refused(r, Code::Unauthenticated);
    }
    invalid(
        c.authenticate(pb::AuthenticateRequest::default()).await,
        &["email", "password"],
    );

    // After all of it, the service answers normally.
    assert_eq!(app.get(&me, &admin).await.unwrap().id, me);
}

// ---- 3. generated hostile requests ----

/// Hostile text, with a run of NULs among the nasties.
fn text(valid: impl Strategy<Value = String> + 'static) -> BoxedStrategy<String> {
    hostile::text_with(&["\0\0\0\0\0\0\0\0\0\0"], valid)
}

fn email() -> BoxedStrategy<String> {
    text("[a-z0-9.+]{1,12}@[a-z]{1,8}\\.(com|org|de)")
}

fn password() -> BoxedStrategy<String> {
    text("[ -~]{8,20}")
}

fn id(known: String) -> BoxedStrategy<String> {
    text(prop_oneof![
        Just(known),
        any::<u128>().prop_map(|n| Uuid::from_u128(n).to_string()),
    ])
}

#[derive(Debug, Clone)]
enum Op {
    Create(pb::CreateUserRequest),
    Authenticate(pb::AuthenticateRequest),
    Get(pb::GetUserRequest),
    Update(pb::UpdateUserRequest),
    List(pb::ListUsersRequest),
}

fn op(target: String) -> impl Strategy<Value = Op> {
    let create =
        (email(), text("[A-Za-z ]{1,30}"), password()).prop_map(|(email, name, password)| {
            Op::Create(pb::CreateUserRequest {
                email,
                name,
                password,
            })
        });
    let authenticate = (email(), password()).prop_map(|(email, password)| {
        Op::Authenticate(pb::AuthenticateRequest { email, password })
    });
    let get = id(target.clone()).prop_map(|user_id| Op::Get(pb::GetUserRequest { user_id }));
    let roles = prop::collection::vec(prop_oneof![0..3i32, any::<i32>()], 0..6);
    let update = (
        id(target),
        prop::option::of(email()),
        prop::option::of(text("[A-Za-z ]{1,30}")),
        prop::option::of(password()),
        prop::option::of(roles),
        prop::option::of(any::<bool>()),
    )
        .prop_map(|(user_id, email, name, password, roles, active)| {
            Op::Update(pb::UpdateUserRequest {
                user_id,
                email,
                name,
                password,
                roles: roles.map(|roles| pb::RoleSet { roles }),
                active,
            })
        });
    let list = (
        prop_oneof![any::<i32>(), -2..600i32],
        text(Just(String::new())),
    )
        .prop_map(|(page_size, page_token)| {
            Op::List(pb::ListUsersRequest {
                page_size,
                page_token,
            })
        });
    prop_oneof![create, authenticate, get, update, list]
}

#[test]
fn generated_hostile_requests_never_fail_internally() {
    let rt = runtime();
    let mut app = rt.block_on(app(TestDb::sqlite()));
    // A victim for updates; the admin itself is never touched.
    let victim = rt.block_on(app.signup("victim@example.com", "Victim", "password-1"));
    let admin = admin_token();
    let client = app.client.clone();

    proptest!(proptest_config(0x5EED_0001, 256), |(op in op(victim.id.clone()))| {
        let mut c = client.clone();
        let (result, extra) = rt.block_on(async {
            match op {
                Op::Create(r) => (c.create_user(r).await.map(drop), None),
                Op::Authenticate(r) => (
                    c.authenticate(r).await.map(drop),
                    // Documented: one answer for every failed sign-in.
                    Some(Code::Unauthenticated),
                ),
                Op::Get(r) => (c.get_user(bearer(r, &admin)).await.map(drop), None),
                Op::Update(r) => (c.update_user(bearer(r, &admin)).await.map(drop), None),
                Op::List(r) => (c.list_users(bearer(r, &admin)).await.map(drop), None),
            }
        });
        if let Err(s) = result {
            expected_refusal(&s, extra)?;
        }
    });

    let me = app.admin_id.clone();
    let token = app.admin_token.clone();
    let user = rt
        .block_on(app.get(&me, &token))
        .expect("a normal call after the run");
    assert_eq!(user.id, me);
}
