//! What every Emporium server provides around the API, checked once here for
//! the payment service: health, reflection, the admin port.

use emporium_common::rpc::health::health_check_response::ServingStatus;
use emporium_testkit::{TestDb, health_status, http_get, reflected_services};

use crate::app;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_reflection_and_probes_are_served() {
    let app = app(TestDb::sqlite()).await;
    let channel = app.svc.channel().await;
    for service in ["", "emporium.payment.v1.PaymentService"] {
        let status = health_status(channel.clone(), service).await.unwrap();
        assert_eq!(status, ServingStatus::Serving, "{service:?}");
    }

    let names = reflected_services(channel).await;
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
