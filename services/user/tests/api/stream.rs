//! StreamUsers: one result per operation, in order; a bad operation does not
//! end the stream.

use emporium_common::rpc::Code;
use emporium_testkit::{TestDb, backend_tests, bearer};
use futures::StreamExt as _;
use pb::{stream_users_request::Operation, stream_users_response::Result as Out};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::{app, pb};

backend_tests!(
    each_operation_gets_its_own_result,
    customers_stream_only_on_themselves
);

fn op(id: &str, operation: Option<Operation>) -> pb::StreamUsersRequest {
    pb::StreamUsersRequest {
        operation_id: id.into(),
        operation,
    }
}

fn create(email: &str) -> Option<Operation> {
    Some(Operation::Create(pb::CreateUserRequest {
        email: email.into(),
        name: "Bulk".into(),
        password: "password-1".into(),
    }))
}

fn error_code(r: &pb::StreamUsersResponse) -> Option<Code> {
    match &r.result {
        Some(Out::Error(s)) => Some(Code::from_i32(s.code)),
        _ => None,
    }
}

async fn each_operation_gets_its_own_result(db: TestDb) {
    let mut app = app(db).await;
    let admin = app.admin_token.clone();
    let (tx, rx) = mpsc::channel(8);
    let mut results = app
        .client
        .stream_users(bearer(ReceiverStream::new(rx), &admin))
        .await
        .unwrap()
        .into_inner();

    // Interactive: each answer arrives before the next operation is sent.
    tx.send(op("1", create("bulk1@example.com"))).await.unwrap();
    let r1 = results.next().await.unwrap().unwrap();
    assert_eq!(r1.operation_id, "1");
    let Some(Out::User(u1)) = r1.result else {
        panic!("{r1:?}")
    };

    tx.send(op("2", create("not-an-email"))).await.unwrap();
    let r2 = results.next().await.unwrap().unwrap();
    assert_eq!(
        (r2.operation_id.as_str(), error_code(&r2)),
        ("2", Some(Code::InvalidArgument))
    );
    let Some(Out::Error(status)) = &r2.result else {
        unreachable!()
    };
    assert_eq!(
        status.details.len(),
        1,
        "field violations travel with the result"
    );

    // A pipelined batch after the failure, including a duplicate and an empty op.
    let batch = [
        op("3", create("BULK1@example.com")),
        op(
            "4",
            Some(Operation::Get(pb::GetUserRequest {
                user_id: u1.id.clone(),
            })),
        ),
        op(
            "5",
            Some(Operation::Update(pb::UpdateUserRequest {
                user_id: u1.id.clone(),
                name: Some("Renamed".into()),
                ..Default::default()
            })),
        ),
        op("6", None),
        op(
            "7",
            Some(Operation::Delete(pb::DeleteUserRequest {
                user_id: u1.id.clone(),
            })),
        ),
        op(
            "8",
            Some(Operation::Get(pb::GetUserRequest {
                user_id: u1.id.clone(),
            })),
        ),
    ];
    for o in batch {
        tx.send(o).await.unwrap();
    }
    drop(tx);
    let rest: Vec<_> = results.map(|r| r.unwrap()).collect().await;
    let ids: Vec<_> = rest.iter().map(|r| r.operation_id.as_str()).collect();
    assert_eq!(ids, ["3", "4", "5", "6", "7", "8"]);
    assert_eq!(error_code(&rest[0]), Some(Code::AlreadyExists));
    assert!(matches!(&rest[1].result, Some(Out::User(u)) if u.id == u1.id));
    assert!(matches!(&rest[2].result, Some(Out::User(u)) if u.name == "Renamed"));
    assert_eq!(error_code(&rest[3]), Some(Code::InvalidArgument));
    assert!(matches!(rest[4].result, Some(Out::Deleted(_))));
    assert_eq!(error_code(&rest[5]), Some(Code::NotFound));
}

async fn customers_stream_only_on_themselves(db: TestDb) {
    let mut app = app(db).await;
    let (me, token) = app.customer("self@example.com").await;
    let admin_id = app.admin_id.clone();
    let ops = futures::stream::iter([
        op(
            "mine",
            Some(Operation::Get(pb::GetUserRequest {
                user_id: me.id.clone(),
            })),
        ),
        op(
            "theirs",
            Some(Operation::Get(pb::GetUserRequest {
                user_id: admin_id.clone(),
            })),
        ),
        op(
            "escalate",
            Some(Operation::Update(pb::UpdateUserRequest {
                user_id: me.id.clone(),
                roles: Some(pb::RoleSet {
                    roles: vec![pb::Role::Admin as i32],
                }),
                ..Default::default()
            })),
        ),
    ]);
    let results: Vec<_> = app
        .client
        .stream_users(bearer(ops, &token))
        .await
        .unwrap()
        .into_inner()
        .map(|r| r.unwrap())
        .collect()
        .await;
    assert!(matches!(&results[0].result, Some(Out::User(u)) if u.id == me.id));
    assert_eq!(error_code(&results[1]), Some(Code::PermissionDenied));
    assert_eq!(error_code(&results[2]), Some(Code::PermissionDenied));
}
