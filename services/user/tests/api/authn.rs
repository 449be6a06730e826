//! Authenticate and the access-token gate in front of every RPC.

use emporium_common::{
    auth::{Role, Tokens},
    config::{AuthConfig, Secret},
    rpc::{Code, Request},
};
use emporium_testkit::{TestDb, backend_tests, bearer};

use crate::{ADMIN_EMAIL, app, pb, refused, violated_fields};

backend_tests!(
    authenticate_issues_a_token_for_the_user,
    wrong_password_and_unknown_email_look_the_same,
    authenticate_requires_both_fields,
    calls_without_a_valid_token_are_unauthenticated,
    admin_is_bootstrapped_from_config,
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
        (now + 3_500..=now + 3_700).contains(&expire),
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
        let s = refused(
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
    let s = refused(
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
    refused(
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
        refused(app.get(&id, token).await, Code::Unauthenticated);
    }
    let mut req = Request::new(pb::GetUserRequest {
        user_id: id.clone(),
    });
    req.metadata_mut().insert(
        "authorization",
        format!("Basic {}", app.admin_token).parse().unwrap(),
    );
    refused(app.client.get_user(req).await, Code::Unauthenticated);
    // Every protected RPC is gated, including the stream and the list.
    refused(
        app.client.list_users(pb::ListUsersRequest::default()).await,
        Code::Unauthenticated,
    );
    refused(
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
