//! Mutual TLS checks who calls: with client certificates required, Charge and
//! Refund take the order service's certificate only (its `spiffe://emporium/order`
//! URI, as `make certs` issues it), even with a valid order-service token.

use emporium_cli::{certs::write_dev_certs, cli::DevCertsArgs};
use emporium_common::{
    auth::Role,
    client::channel,
    config::{PeerConfig, PeerTlsConfig, TlsConfig},
    rpc::Code,
};
use emporium_payment::Config;
use emporium_proto::{common::v1::Money, payment::v1 as pb};
use emporium_testkit::{TestDb, base_config, bearer, spawn, tokens};
use uuid::Uuid;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn charge_over_mutual_tls_takes_only_the_order_services_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    write_dev_certs(&DevCertsArgs {
        out: certs.clone(),
        force: false,
    })
    .unwrap();
    let file = |name: &str| Some(certs.join(name));
    let svc = spawn(TestDb::sqlite(), |database, listeners, stop| {
        let mut base = base_config(database);
        base.server.tls = TlsConfig {
            enabled: true,
            cert_file: file("payment.pem"),
            key_file: file("payment-key.pem"),
            ca_file: file("ca.pem"),
            require_client_cert: true,
        };
        emporium_payment::serve(
            Config {
                base,
                ..Default::default()
            },
            listeners,
            stop,
        )
    })
    .await;
    // A client presenting the certificate of `service`, with a valid order token.
    let charge_as = |service: &'static str| {
        let peer = PeerConfig {
            url: format!("https://127.0.0.1:{}", svc.grpc_addr.port()),
            tls: PeerTlsConfig {
                enabled: true,
                ca_file: file("ca.pem"),
                cert_file: file(&format!("{service}.pem")),
                key_file: file(&format!("{service}-key.pem")),
                server_name: None,
            },
            ..PeerConfig::local(0)
        };
        async move {
            let mut client = pb::payment_service_client::PaymentServiceClient::new(
                channel(service, &peer).unwrap(),
            );
            let user = Uuid::now_v7();
            let token = tokens()
                .issue_service("order", user, &[Role::Customer])
                .unwrap()
                .token;
            client
                .charge(bearer(
                    pb::ChargeRequest {
                        order_id: Uuid::now_v7().to_string(),
                        user_id: user.to_string(),
                        amount: Some(Money {
                            currency_code: "EUR".into(),
                            units: 1999,
                        }),
                        payment_method: "pm_card_ok".into(),
                        idempotency_key: format!("k-{}", Uuid::now_v7()),
                    },
                    &token,
                ))
                .await
        }
    };
    for other in ["user", "inventory"] {
        let s = charge_as(other).await.unwrap_err();
        assert_eq!(s.code(), Code::PermissionDenied, "{other}: {s:?}");
        assert!(s.message().contains("certificate"), "{s:?}");
    }
    let paid = charge_as("order")
        .await
        .expect("the order service's certificate");
    assert_eq!(
        paid.into_inner().payment.unwrap().amount.unwrap().units,
        1999
    );
}
