//! What `emporium dev-certs` writes is what the services need: two services
//! talk over mutual TLS with it, by IP address and by their compose name.

use emporium_cli::{certs::write_dev_certs, cli::DevCertsArgs};
use emporium_common::{
    auth::Tokens,
    client::channel,
    config::{AuthConfig, PeerConfig, PeerTlsConfig, ServerConfig, TlsConfig},
    rpc::health::{
        HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
    },
    server::{Listeners, Server},
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn order_calls_user_over_mutual_tls_with_the_dev_certs() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    write_dev_certs(&DevCertsArgs {
        out: certs.clone(),
        force: false,
    })
    .unwrap();

    let config = ServerConfig {
        drain_delay_ms: 0,
        tls: TlsConfig {
            enabled: true,
            cert_file: Some(certs.join("user.pem")),
            key_file: Some(certs.join("user-key.pem")),
            ca_file: Some(certs.join("ca.pem")),
            require_client_cert: true,
        },
        ..ServerConfig::local(0, 0)
    };
    let tokens = Tokens::new(&AuthConfig::default()).expect("default auth config");
    let listeners = Listeners::ephemeral().await.unwrap();
    let port = listeners.grpc_addr().port();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(Server::new(&config, tokens).access_log(false).serve(
        listeners,
        async {
            let _ = stopped.await;
        },
    ));

    // The order service's identity, checking the user service's certificate
    // first by IP address, then by its compose/Kubernetes name.
    for server_name in [None, Some("emporium-user".to_owned())] {
        let peer = PeerConfig {
            url: format!("https://127.0.0.1:{port}"),
            tls: PeerTlsConfig {
                enabled: true,
                ca_file: Some(certs.join("ca.pem")),
                cert_file: Some(certs.join("order.pem")),
                key_file: Some(certs.join("order-key.pem")),
                server_name,
            },
            ..PeerConfig::local(0)
        };
        let status = HealthClient::new(channel("health", &peer).unwrap())
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await
            .unwrap()
            .into_inner()
            .status();
        assert_eq!(status, ServingStatus::Serving);
    }

    let _ = stop.send(());
    server.await.unwrap().unwrap();
}
