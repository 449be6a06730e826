//! Authenticate and the access-token gate in front of every RPC.

use emporium_common::{
    auth::{Role, Tokens},
    config::{AuthConfig, Secret},
    rpc::{Code, Request},
};
use emporium_testkit::{TestDb, backend_tests, bearer};

use crate::{ADMIN_EMAIL, app, assert_code, pb, violated_fields};

backend_tests!(
    authenticate_issues_a_token_for_the_user,
    wrong_password_and_unknown_email_look_the_same,
    authenticate_requires_both_fields,
    calls_without_a_valid_token_are_unauthenticated,
    admin_is_bootstrapped_from_config,
    a_demoted_admin_or_deactivated_user_loses_rights_here_at_once,
);

async fn authenticate_issues_a_token_for_the_user(db: TestDb) {
    let mut app = app(db).await;
    let user = app.signup("tok@example.com", "Tok", "password-1").await;
    let auth = app.login("tok@example.com", "password-1").await;
    assert_eq!(auth.token_type, "Bearer");
    assert_eq!(auth.user.as_ref().unwrap().id, user.id);
    let expire = auth.expire_time.unwrap().seconds;
    let now = emporium_common::time::now_micros() / 1_000_000;
    assert!(
        // auth.token_ttl_secs: 15 minutes by default.
        (now + 850..=now + 950).contains(&expire),
        "{expire} vs {now}"
    );
    let caller = emporium_testkit::tokens()
        .verify(&auth.access_token)
        .unwrap();
    assert_eq!(caller.user_id.to_string(), user.id);
    assert_eq!(caller.roles, vec![Role::Customer]);
    assert_eq!(
        app.get(&user.id, &auth.access_token).await.unwrap().id,
        user.id
    );
}

async fn wrong_password_and_unknown_email_look_the_same(db: TestDb) {
    let mut app = app(db).await;
    app.signup("known@example.com", "Known", "password-1").await;
    let mut answers = Vec::new();
    for (email, password) in [
        ("known@example.com", "wrong-password"),
        ("unknown@example.com", "password-1"),
    ] {
        let s = assert_code(
            app.client
                .authenticate(pb::AuthenticateRequest {
                    email: email.into(),
                    password: password.into(),
                })
                .await,
            Code::Unauthenticated,
        );
        answers.push(s.message().to_owned());
    }
    assert_eq!(answers[0], answers[1]);
}

async fn authenticate_requires_both_fields(db: TestDb) {
    let mut app = app(db).await;
    let s = assert_code(
        app.client
            .authenticate(pb::AuthenticateRequest::default())
            .await,
        Code::InvalidArgument,
    );
    assert_eq!(violated_fields(&s), ["email", "password"]);
}

async fn calls_without_a_valid_token_are_unauthenticated(db: TestDb) {
    let mut app = app(db).await;
    let id = app.admin_id.clone();
    // No token at all.
    assert_code(
        app.client
            .get_user(pb::GetUserRequest {
                user_id: id.clone(),
            })
            .await,
        Code::Unauthenticated,
    );
    // Garbage, a wrong scheme, and a token signed with another key.
    let foreign = Tokens::new(&AuthConfig {
        jwt_secret: Secret::new("some-other-secret-0123456789abcdef"),
        ..emporium_testkit::auth_config()
    })
    .unwrap()
    .issue(uuid::Uuid::parse_str(&id).unwrap(), &[Role::Admin])
    .unwrap()
    .token;
    for token in ["garbage", "a.b.c", foreign.as_str()] {
        assert_code(app.get(&id, token).await, Code::Unauthenticated);
    }
    let mut req = Request::new(pb::GetUserRequest {
        user_id: id.clone(),
    });
    req.metadata_mut().insert(
        "authorization",
        format!("Basic {}", app.admin_token).parse().unwrap(),
    );
    assert_code(app.client.get_user(req).await, Code::Unauthenticated);
    // Every protected RPC is gated, including the stream and the list.
    assert_code(
        app.client.list_users(pb::ListUsersRequest::default()).await,
        Code::Unauthenticated,
    );
    assert_code(
        app.client
            .stream_users(futures::stream::empty::<pb::StreamUsersRequest>())
            .await,
        Code::Unauthenticated,
    );
    // Sign-up stays open even with a stale token attached.
    let r = app
        .client
        .create_user(bearer(
            pb::CreateUserRequest {
                email: "open@example.com".into(),
                name: "Open".into(),
                password: "password-1".into(),
            },
            "stale.token.value",
        ))
        .await;
    assert!(r.is_ok(), "{r:?}");
}

async fn admin_is_bootstrapped_from_config(db: TestDb) {
    let mut app = app(db).await;
    let admin = app.admin_token.clone();
    let id = app.admin_id.clone();
    let me = app.get(&id, &admin).await.unwrap();
    assert_eq!(me.email, ADMIN_EMAIL);
    assert!(me.roles.contains(&(pb::Role::Admin as i32)));
    // Sign-up never grants admin.
    let user = app
        .signup("wannabe@example.com", "Wannabe", "password-1")
        .await;
    assert_eq!(user.roles, vec![pb::Role::Customer as i32]);
}

/// A token carries the roles of when it was issued; the user service checks the
/// account behind it on every call, so demotion and deactivation apply at once
/// here (and elsewhere within `auth.token_ttl_secs`, docs/security.md).
async fn a_demoted_admin_or_deactivated_user_loses_rights_here_at_once(db: TestDb) {
    let mut app = app(db).await;
    let root = app
        .login(ADMIN_EMAIL, crate::ADMIN_PASSWORD)
        .await
        .access_token;
    let (bob, _) = app.customer("bob@example.com").await;
    let set = |active: Option<bool>, roles: Option<Vec<pb::Role>>| pb::UpdateUserRequest {
        user_id: bob.id.clone(),
        active,
        roles: roles.map(|r| pb::RoleSet {
            roles: r.into_iter().map(|r| r as i32).collect(),
        }),
        ..Default::default()
    };
    app.client
        .update_user(bearer(
            set(None, Some(vec![pb::Role::Customer, pb::Role::Admin])),
            &root,
        ))
        .await
        .unwrap();
    let bobs = app
        .login("bob@example.com", "customer-pw-1")
        .await
        .access_token;
    let list = || pb::ListUsersRequest::default();
    app.client.list_users(bearer(list(), &bobs)).await.unwrap();

    // Demoted: the same token, still valid, is no longer an admin's.
    app.client
        .update_user(bearer(set(None, Some(vec![pb::Role::Customer])), &root))
        .await
        .unwrap();
    assert_code(
        app.client.list_users(bearer(list(), &bobs)).await,
        Code::PermissionDenied,
    );
    assert_eq!(app.get(&bob.id, &bobs).await.unwrap().id, bob.id);

    // Deactivated: the token stops working altogether.
    app.client
        .update_user(bearer(set(Some(false), None), &root))
        .await
        .unwrap();
    assert_code(app.get(&bob.id, &bobs).await, Code::Unauthenticated);
}
