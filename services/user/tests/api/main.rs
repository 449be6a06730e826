//! API tests of the user service: a real server on a real socket, a real tonic
//! client, a fresh database per test, on SQLite and PostgreSQL.

mod accounts;
mod authn;
mod hostile;
mod listing;
mod otlp;
mod process;
mod server;
mod store;
mod stream;
mod stream_limits;

use emporium_common::rpc::{Channel, Status};
use emporium_proto::user::v1 as pb;
use emporium_testkit::{Spawned, TestDb, bearer, spawn_user};
pub(crate) use emporium_testkit::{refused, violated_fields};
use pb::user_service_client::UserServiceClient;

pub(crate) const ADMIN_EMAIL: &str = "admin@emporium.test";
pub(crate) const ADMIN_PASSWORD: &str = "admin-password-1";

/// A running user service with a bootstrapped admin and a client.
pub(crate) struct App {
    pub(crate) svc: Spawned,
    pub(crate) client: UserServiceClient<Channel>,
    pub(crate) admin_token: String,
    pub(crate) admin_id: String,
}

pub(crate) async fn app(db: TestDb) -> App {
    app_with(db, |_| {}).await
}

/// [`app`] with `tweak` applied to the service's config.
pub(crate) async fn app_with(db: TestDb, tweak: impl FnOnce(&mut emporium_user::Config)) -> App {
    let svc = spawn_user(db, |c| {
        c.user.admin_email = Some(ADMIN_EMAIL.into());
        c.user.admin_password = Some(emporium_common::config::Secret::new(ADMIN_PASSWORD));
        tweak(c);
    })
    .await;
    let client = UserServiceClient::new(svc.channel().await);
    let mut app = App {
        svc,
        client,
        admin_token: String::new(),
        admin_id: String::new(),
    };
    let auth = app.login(ADMIN_EMAIL, ADMIN_PASSWORD).await;
    app.admin_token = auth.access_token;
    app.admin_id = auth.user.unwrap().id;
    app
}

impl App {
    pub(crate) async fn signup(&mut self, email: &str, name: &str, password: &str) -> pb::User {
        self.client
            .create_user(pb::CreateUserRequest {
                email: email.into(),
                name: name.into(),
                password: password.into(),
            })
            .await
            .expect("create user")
            .into_inner()
            .user
            .expect("user in response")
    }

    pub(crate) async fn login(&mut self, email: &str, password: &str) -> pb::AuthenticateResponse {
        self.client
            .authenticate(pb::AuthenticateRequest {
                email: email.into(),
                password: password.into(),
            })
            .await
            .expect("authenticate")
            .into_inner()
    }

    /// Signs a customer up and logs them in: (user, token).
    pub(crate) async fn customer(&mut self, email: &str) -> (pb::User, String) {
        let user = self.signup(email, "Customer", "customer-pw-1").await;
        let token = self.login(email, "customer-pw-1").await.access_token;
        (user, token)
    }

    pub(crate) async fn get(&mut self, id: &str, token: &str) -> Result<pb::User, Status> {
        self.client
            .get_user(bearer(pb::GetUserRequest { user_id: id.into() }, token))
            .await
            .map(|r| r.into_inner().user.expect("user"))
    }
}
