//! Transport: the generated `UserService` trait over [`Users`]. Every RPC runs
//! the same four steps: proto → domain (collecting field violations), call the
//! domain, domain → proto, and `?` through `From<Error> for Status`. No SQL, no
//! rules.

use std::pin::Pin;

use emporium_common::{
    auth::{Caller, Role, caller},
    paging,
    rpc::{Request, Response, RpcResult, Status, Streaming, async_trait},
    stack::PerOperation,
    status::{Violations, to_rpc_status},
    time::{timestamp_from_micros, timestamp_from_secs},
};
use emporium_proto::user::v1 as pb;
use futures::{Stream, StreamExt as _};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::{
    domain::{Email, NewUser, Password, Roles, User, UserChanges, UserId, UserName},
    error::Error,
    service::Users,
};

/// Methods open without a token: signing up and signing in.
pub const PUBLIC_METHODS: [&str; 2] = [
    "/emporium.user.v1.UserService/CreateUser",
    "/emporium.user.v1.UserService/Authenticate",
];

const LISTING: &str = "users.v1";

/// The gRPC face of the user service.
#[derive(Debug, Clone)]
pub struct UserApi {
    users: Users,
}

impl UserApi {
    /// Wraps the domain service.
    pub fn new(users: Users) -> Self {
        Self { users }
    }

    /// The generated server, with message limits from configuration.
    pub fn into_server(
        self,
        max_message_bytes: usize,
    ) -> pb::user_service_server::UserServiceServer<Self> {
        pb::user_service_server::UserServiceServer::new(self)
            .max_decoding_message_size(max_message_bytes)
            .max_encoding_message_size(max_message_bytes)
    }
}

fn user_id(field: &str, raw: &str) -> Result<UserId, Error> {
    UserId::parse(raw).map_err(|e| Error::InvalidArgument(Violations::one(field, e)))
}

impl TryFrom<pb::CreateUserRequest> for NewUser {
    type Error = Violations;
    fn try_from(r: pb::CreateUserRequest) -> Result<Self, Violations> {
        let mut v = Violations::new();
        let email = v.check("email", Email::parse(&r.email));
        let name = v.check("name", UserName::parse(&r.name));
        let password = v.check("password", Password::parse(&r.password));
        match (email, name, password) {
            (Some(email), Some(name), Some(password)) => Ok(NewUser {
                email,
                name,
                password,
            }),
            _ => Err(v),
        }
    }
}

/// An update request in domain terms.
struct Update {
    id: UserId,
    changes: UserChanges,
}

impl TryFrom<pb::UpdateUserRequest> for Update {
    type Error = Violations;
    fn try_from(r: pb::UpdateUserRequest) -> Result<Self, Violations> {
        let mut v = Violations::new();
        let id = v.check("user_id", UserId::parse(&r.user_id));
        let mut changes = UserChanges::default();
        if let Some(e) = &r.email {
            changes.email = v.check("email", Email::parse(e));
        }
        if let Some(n) = &r.name {
            changes.name = v.check("name", UserName::parse(n));
        }
        if let Some(p) = &r.password {
            changes.password = v.check("password", Password::parse(p));
        }
        if let Some(set) = &r.roles {
            let mut roles = Vec::new();
            for (i, raw) in set.roles.iter().enumerate() {
                match pb::Role::try_from(*raw) {
                    Ok(pb::Role::Customer) => roles.push(Role::Customer),
                    Ok(pb::Role::Admin) => roles.push(Role::Admin),
                    _ => v.add(
                        format!("roles.roles[{i}]"),
                        "must be ROLE_CUSTOMER or ROLE_ADMIN",
                    ),
                }
            }
            if set.roles.is_empty() {
                v.add("roles.roles", "must contain at least one role");
            } else {
                changes.roles = Roles::new(roles).ok();
            }
        }
        changes.active = r.active;
        let id = v.finish_with(id)?;
        Ok(Update { id, changes })
    }
}

impl From<User> for pb::User {
    fn from(u: User) -> Self {
        pb::User {
            id: u.id.to_string(),
            email: u.email,
            name: u.name,
            roles: u
                .roles
                .as_slice()
                .iter()
                .map(|r| match r {
                    Role::Customer => pb::Role::Customer as i32,
                    Role::Admin => pb::Role::Admin as i32,
                })
                .collect(),
            active: u.active,
            create_time: Some(timestamp_from_micros(u.created_at)),
            update_time: Some(timestamp_from_micros(u.updated_at)),
        }
    }
}

impl UserApi {
    async fn create(&self, r: pb::CreateUserRequest) -> Result<pb::User, Error> {
        let new = NewUser::try_from(r).map_err(Error::InvalidArgument)?;
        Ok(self.users.create(new).await?.into())
    }

    async fn get(&self, caller: &Caller, r: pb::GetUserRequest) -> Result<pb::User, Error> {
        let id = user_id("user_id", &r.user_id)?;
        Ok(self.users.get(caller, id).await?.into())
    }

    async fn update(&self, caller: &Caller, r: pb::UpdateUserRequest) -> Result<pb::User, Error> {
        let u = Update::try_from(r).map_err(Error::InvalidArgument)?;
        Ok(self.users.update(caller, u.id, u.changes).await?.into())
    }

    async fn delete(&self, caller: &Caller, r: pb::DeleteUserRequest) -> Result<(), Error> {
        let id = user_id("user_id", &r.user_id)?;
        self.users.delete(caller, id).await
    }

    async fn stream_one(
        &self,
        caller: &Caller,
        r: pb::StreamUsersRequest,
    ) -> pb::StreamUsersResponse {
        use pb::{stream_users_request::Operation, stream_users_response::Result as Out};
        let result = match r.operation {
            None => Err(Error::InvalidArgument(Violations::one(
                "operation",
                "is required",
            ))),
            Some(Operation::Create(c)) => self.create(c).await.map(Out::User),
            Some(Operation::Get(g)) => self.get(caller, g).await.map(Out::User),
            Some(Operation::Update(u)) => self.update(caller, u).await.map(Out::User),
            Some(Operation::Delete(d)) => self
                .delete(caller, d)
                .await
                .map(|()| Out::Deleted(pb::DeleteUserResponse {})),
        };
        pb::StreamUsersResponse {
            operation_id: r.operation_id,
            result: Some(result.unwrap_or_else(|e| Out::Error(to_rpc_status(&Status::from(e))))),
        }
    }
}

/// The answer to an operation refused before it ran.
fn refused(operation_id: String, status: &Status) -> pb::StreamUsersResponse {
    pb::StreamUsersResponse {
        operation_id,
        result: Some(pb::stream_users_response::Result::Error(to_rpc_status(
            status,
        ))),
    }
}

type ResponseStream = Pin<Box<dyn Stream<Item = Result<pb::StreamUsersResponse, Status>> + Send>>;

#[async_trait]
impl pb::user_service_server::UserService for UserApi {
    async fn create_user(
        &self,
        req: Request<pb::CreateUserRequest>,
    ) -> RpcResult<pb::CreateUserResponse> {
        let user = self.create(req.into_inner()).await?;
        Ok(Response::new(pb::CreateUserResponse { user: Some(user) }))
    }

    async fn authenticate(
        &self,
        req: Request<pb::AuthenticateRequest>,
    ) -> RpcResult<pb::AuthenticateResponse> {
        let r = req.into_inner();
        let mut v = Violations::new();
        if r.email.is_empty() {
            v.add("email", "is required");
        }
        if r.password.is_empty() {
            v.add("password", "is required");
        }
        v.finish().map_err(Error::InvalidArgument)?;
        let (token, user) = self.users.authenticate(&r.email, &r.password).await?;
        Ok(Response::new(pb::AuthenticateResponse {
            access_token: token.token,
            token_type: "Bearer".into(),
            expire_time: Some(timestamp_from_secs(
                i64::try_from(token.expires_at).unwrap_or(i64::MAX),
            )),
            user: Some(user.into()),
        }))
    }

    async fn get_user(&self, req: Request<pb::GetUserRequest>) -> RpcResult<pb::GetUserResponse> {
        let caller = caller(&req)?;
        let user = self.get(&caller, req.into_inner()).await?;
        Ok(Response::new(pb::GetUserResponse { user: Some(user) }))
    }

    async fn update_user(
        &self,
        req: Request<pb::UpdateUserRequest>,
    ) -> RpcResult<pb::UpdateUserResponse> {
        let caller = caller(&req)?;
        let user = self.update(&caller, req.into_inner()).await?;
        Ok(Response::new(pb::UpdateUserResponse { user: Some(user) }))
    }

    async fn delete_user(
        &self,
        req: Request<pb::DeleteUserRequest>,
    ) -> RpcResult<pb::DeleteUserResponse> {
        let caller = caller(&req)?;
        self.delete(&caller, req.into_inner()).await?;
        Ok(Response::new(pb::DeleteUserResponse {}))
    }

    async fn list_users(
        &self,
        req: Request<pb::ListUsersRequest>,
    ) -> RpcResult<pb::ListUsersResponse> {
        let caller = caller(&req)?;
        let r = req.into_inner();
        let mut v = Violations::new();
        let page = paging::time_page(&mut v, LISTING, r.page_size, &r.page_token);
        let (size, after) = v.finish_with(page).map_err(Error::InvalidArgument)?;
        let page = self.users.list(&caller, after, size).await?;
        Ok(Response::new(pb::ListUsersResponse {
            users: page.items.into_iter().map(Into::into).collect(),
            next_page_token: page.next.map(|c| c.encode(LISTING)).unwrap_or_default(),
        }))
    }

    type StreamUsersStream = ResponseStream;

    async fn stream_users(
        &self,
        req: Request<Streaming<pb::StreamUsersRequest>>,
    ) -> RpcResult<Self::StreamUsersStream> {
        let caller = caller(&req)?;
        // The stream was admitted once; its operations come for as long as it
        // lives, so each is checked again: the token's expiry (an expired token
        // ends the stream: every later operation would fail the same way) and a
        // permit from the caller's rate-limit bucket (refused: that operation's
        // answer, the stream goes on). The caller's rights are re-read from the
        // accounts by each operation itself (`Users::current`), so a demoted or
        // deactivated user loses them at the next operation.
        let checks = PerOperation::of(&req);
        let mut inbound = req.into_inner();
        // A small buffer: a client that stops reading stops us reading too.
        let (tx, rx) = mpsc::channel(16);
        let api = self.clone();
        // In the request's span, so each operation's logs and spans join its trace.
        tokio::spawn(tracing::Instrument::in_current_span(async move {
            while let Some(next) = inbound.next().await {
                let out = match next {
                    Ok(op) => match checks.check_token() {
                        Err(expired) => Err(expired),
                        Ok(()) => Ok(match checks.take_permit() {
                            Ok(()) => api.stream_one(&caller, op).await,
                            Err(limited) => refused(op.operation_id, &limited),
                        }),
                    },
                    // A broken or malformed inbound message ends the stream with
                    // its status; there is no operation to answer.
                    Err(status) => Err(status),
                };
                let stop = out.is_err();
                if tx.send(out).await.is_err() || stop {
                    break;
                }
            }
        }));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}
