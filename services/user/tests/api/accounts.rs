//! CreateUser, GetUser, UpdateUser, DeleteUser: rules, ownership and errors.

use emporium_common::rpc::Code;
use emporium_testkit::{TestDb, backend_tests, bearer};

use crate::{app, pb, refused, violated_fields};

backend_tests!(
    sign_up_creates_an_active_customer,
    sign_up_names_every_invalid_field,
    emails_are_unique_case_insensitively,
    customers_see_only_themselves,
    ids_are_validated,
    update_changes_only_present_fields,
    only_admins_change_roles_and_active,
    deactivated_users_cannot_sign_in,
    delete_removes_the_user,
);

async fn sign_up_creates_an_active_customer(db: TestDb) {
    let mut app = app(db).await;
    let user = app
        .signup("Jane.Doe@Example.com", "  Jane Doe ", "s3cret-pass")
        .await;
    assert_eq!(user.email, "Jane.Doe@Example.com");
    assert_eq!(user.name, "Jane Doe");
    assert_eq!(user.roles, vec![pb::Role::Customer as i32]);
    assert!(user.active);
    assert_eq!(user.id.len(), 36);
    assert!(user.create_time.is_some() && user.update_time.is_some());
    // The stored user reads back identically.
    let token = app.admin_token.clone();
    assert_eq!(app.get(&user.id, &token).await.unwrap(), user);
}

async fn sign_up_names_every_invalid_field(db: TestDb) {
    let mut app = app(db).await;
    let s = refused(
        app.client
            .create_user(pb::CreateUserRequest {
                email: "not-an-email".into(),
                name: " ".into(),
                password: "short".into(),
            })
            .await,
        Code::InvalidArgument,
    );
    assert_eq!(violated_fields(&s), ["email", "name", "password"]);
    assert!(s.message().contains("email: must contain @"), "{s:?}");
}

async fn emails_are_unique_case_insensitively(db: TestDb) {
    let mut app = app(db).await;
    app.signup("dup@example.com", "First", "password-1").await;
    let r = app
        .client
        .create_user(pb::CreateUserRequest {
            email: "DUP@Example.COM".into(),
            name: "Second".into(),
            password: "password-2".into(),
        })
        .await;
    refused(r, Code::AlreadyExists);
    // Sign-in is case-insensitive too, and the first account is intact.
    let auth = app.login("Dup@EXAMPLE.com", "password-1").await;
    assert_eq!(auth.user.unwrap().name, "First");
}

async fn customers_see_only_themselves(db: TestDb) {
    let mut app = app(db).await;
    let (alice, alice_token) = app.customer("alice@example.com").await;
    let (bob, _) = app.customer("bob@example.com").await;
    assert_eq!(app.get(&alice.id, &alice_token).await.unwrap().id, alice.id);
    refused(app.get(&bob.id, &alice_token).await, Code::PermissionDenied);
    // Not even existence leaks: an unknown id answers the same for a customer.
    let unknown = uuid::Uuid::now_v7().to_string();
    refused(
        app.get(&unknown, &alice_token).await,
        Code::PermissionDenied,
    );
    // Admins see everyone; unknown ids are NOT_FOUND for them.
    let admin = app.admin_token.clone();
    assert_eq!(app.get(&bob.id, &admin).await.unwrap().id, bob.id);
    refused(app.get(&unknown, &admin).await, Code::NotFound);
}

async fn ids_are_validated(db: TestDb) {
    let mut app = app(db).await;
    let admin = app.admin_token.clone();
    for bad in [
        "",
        "nope",
        "0190b1d48b9c7def8123456789abcdef",
        "\0\0\0",
        "ü",
    ] {
        let s = refused(app.get(bad, &admin).await, Code::InvalidArgument);
        assert_eq!(violated_fields(&s), ["user_id"], "{bad:?}");
    }
}

async fn update_changes_only_present_fields(db: TestDb) {
    let mut app = app(db).await;
    let (me, token) = app.customer("me@example.com").await;
    let updated = app
        .client
        .update_user(bearer(
            pb::UpdateUserRequest {
                user_id: me.id.clone(),
                name: Some("New Name".into()),
                ..Default::default()
            },
            &token,
        ))
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    assert_eq!(updated.name, "New Name");
    assert_eq!(updated.email, me.email);
    assert_eq!(updated.roles, me.roles);
    assert_eq!(updated.create_time, me.create_time);
    let micros = |t: &Option<prost_types::Timestamp>| {
        let t = t.as_ref().unwrap();
        (t.seconds, t.nanos)
    };
    assert!(micros(&updated.update_time) >= micros(&me.update_time));

    // A new password replaces the old one.
    app.client
        .update_user(bearer(
            pb::UpdateUserRequest {
                user_id: me.id.clone(),
                password: Some("brand-new-pw".into()),
                ..Default::default()
            },
            &token,
        ))
        .await
        .unwrap();
    app.login("me@example.com", "brand-new-pw").await;
    refused(
        app.client
            .authenticate(pb::AuthenticateRequest {
                email: "me@example.com".into(),
                password: "customer-pw-1".into(),
            })
            .await,
        Code::Unauthenticated,
    );

    // A taken email is refused and nothing changes.
    app.signup("taken@example.com", "Other", "password-x").await;
    let r = app
        .client
        .update_user(bearer(
            pb::UpdateUserRequest {
                user_id: me.id.clone(),
                email: Some("TAKEN@example.com".into()),
                name: Some("Should Not Stick".into()),
                ..Default::default()
            },
            &token,
        ))
        .await;
    refused(r, Code::AlreadyExists);
    assert_eq!(app.get(&me.id, &token).await.unwrap().name, "New Name");

    // Invalid present fields are named; absent ones are not validated.
    let s = refused(
        app.client
            .update_user(bearer(
                pb::UpdateUserRequest {
                    user_id: me.id.clone(),
                    email: Some("bad".into()),
                    password: Some("x".into()),
                    ..Default::default()
                },
                &token,
            ))
            .await,
        Code::InvalidArgument,
    );
    assert_eq!(violated_fields(&s), ["email", "password"]);
}

async fn only_admins_change_roles_and_active(db: TestDb) {
    let mut app = app(db).await;
    let (me, token) = app.customer("climber@example.com").await;
    let promote = pb::UpdateUserRequest {
        user_id: me.id.clone(),
        roles: Some(pb::RoleSet {
            roles: vec![pb::Role::Admin as i32],
        }),
        ..Default::default()
    };
    refused(
        app.client
            .update_user(bearer(promote.clone(), &token))
            .await,
        Code::PermissionDenied,
    );
    let admin = app.admin_token.clone();
    let promoted = app
        .client
        .update_user(bearer(promote, &admin))
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    assert_eq!(promoted.roles, vec![pb::Role::Admin as i32]);
    // The new role is in the next token.
    let auth = app.login("climber@example.com", "customer-pw-1").await;
    let tokens = emporium_testkit::tokens();
    assert!(tokens.verify(&auth.access_token).unwrap().is_admin());

    let s = refused(
        app.client
            .update_user(bearer(
                pb::UpdateUserRequest {
                    user_id: me.id.clone(),
                    roles: Some(pb::RoleSet { roles: vec![0, 99] }),
                    ..Default::default()
                },
                &admin,
            ))
            .await,
        Code::InvalidArgument,
    );
    assert_eq!(violated_fields(&s), ["roles.roles[0]", "roles.roles[1]"]);
}

async fn deactivated_users_cannot_sign_in(db: TestDb) {
    let mut app = app(db).await;
    let (me, _) = app.customer("leaving@example.com").await;
    let admin = app.admin_token.clone();
    let user = app
        .client
        .update_user(bearer(
            pb::UpdateUserRequest {
                user_id: me.id.clone(),
                active: Some(false),
                ..Default::default()
            },
            &admin,
        ))
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    assert!(!user.active);
    let s = refused(
        app.client
            .authenticate(pb::AuthenticateRequest {
                email: "leaving@example.com".into(),
                password: "customer-pw-1".into(),
            })
            .await,
        Code::Unauthenticated,
    );
    assert_eq!(s.message(), "invalid email or password");
}

async fn delete_removes_the_user(db: TestDb) {
    let mut app = app(db).await;
    let (me, token) = app.customer("gone@example.com").await;
    let (other, _) = app.customer("stays@example.com").await;
    refused(
        app.client
            .delete_user(bearer(
                pb::DeleteUserRequest {
                    user_id: other.id.clone(),
                },
                &token,
            ))
            .await,
        Code::PermissionDenied,
    );
    app.client
        .delete_user(bearer(
            pb::DeleteUserRequest {
                user_id: me.id.clone(),
            },
            &token,
        ))
        .await
        .unwrap();
    let admin = app.admin_token.clone();
    refused(app.get(&me.id, &admin).await, Code::NotFound);
    refused(
        app.client
            .delete_user(bearer(
                pb::DeleteUserRequest {
                    user_id: me.id.clone(),
                },
                &admin,
            ))
            .await,
        Code::NotFound,
    );
    // The email is free again, and the other user is untouched.
    app.signup("gone@example.com", "Back", "password-again")
        .await;
    assert_eq!(app.get(&other.id, &admin).await.unwrap(), other);
}
