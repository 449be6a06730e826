//! What every Emporium server provides around the API, checked once here for
//! the payment service: health, reflection, the admin port.

use emporium_common::rpc::{
    health::{
        HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
    },
    reflection::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    },
};
use emporium_testkit::{TestDb, http_get};
use futures::StreamExt as _;

use crate::app;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_reflection_and_probes_are_served() {
    let app = app(TestDb::sqlite()).await;
    let channel = app.svc.channel().await;
    let mut health = HealthClient::new(channel.clone());
    for service in ["", "emporium.payment.v1.PaymentService"] {
        let r = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.status(), ServingStatus::Serving, "{service:?}");
    }

    let mut reflection = ServerReflectionClient::new(channel);
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = reflection
        .server_reflection_info(futures::stream::iter([req]))
        .await
        .unwrap()
        .into_inner();
    let r = responses.next().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = r.message_response else {
        panic!("{r:?}")
    };
    let mut names: Vec<_> = list.service.into_iter().map(|s| s.name).collect();
    names.sort();
    assert_eq!(
        names,
        [
            "emporium.payment.v1.PaymentService",
            "grpc.health.v1.Health",
            "grpc.reflection.v1.ServerReflection",
            "grpc.reflection.v1alpha.ServerReflection",
        ]
    );

    let admin = app.svc.admin_addr;
    assert_eq!(http_get(admin, "/healthz").await.0, 200);
    assert_eq!(http_get(admin, "/readyz").await, (200, "ready\n".into()));
}
