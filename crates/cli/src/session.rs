//! Where the services are, the one channel kept per service, the access token
//! (flag, environment or token file) and the requests that carry it.

use std::{
    ffi::OsString,
    fs, io,
    io::Write,
    path::{Path, PathBuf},
    time::Duration,
};

use emporium_common::{
    client::{PeerChannel, channel},
    config::PeerConfig,
    rpc::{Code, MetadataValue, Request, Response, Status},
};
use emporium_proto::{
    inventory::v1::inventory_service_client::InventoryServiceClient,
    order::v1::order_service_client::OrderServiceClient,
    payment::v1::payment_service_client::PaymentServiceClient,
    user::v1::user_service_client::UserServiceClient,
};

use crate::{cli::GlobalArgs, error::CliError};

/// Deadline of every unary call (sent as `grpc-timeout` and enforced here too).
/// Streams have none: a watch runs until it is stopped.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(15);

/// One of the four services.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    /// Accounts and tokens.
    User,
    /// Catalogue and stock.
    Inventory,
    /// Charges and refunds.
    Payment,
    /// Orders and the saga.
    Order,
}

impl Service {
    /// The service's short name, as in "user service".
    pub fn name(self) -> &'static str {
        match self {
            Service::User => "user",
            Service::Inventory => "inventory",
            Service::Payment => "payment",
            Service::Order => "order",
        }
    }
}

/// One long-lived channel per service (connected lazily, on first use) and the
/// URLs they point at.
#[derive(Debug, Clone)]
pub struct Clients {
    urls: [String; 4],
    channels: [PeerChannel; 4],
}

impl Clients {
    /// Channels to the URLs given on the command line. Nothing is connected yet,
    /// so a service that is down only matters to the commands that call it.
    pub fn new(global: &GlobalArgs) -> Result<Self, CliError> {
        let urls = [
            global.user_url.clone(),
            global.inventory_url.clone(),
            global.payment_url.clone(),
            global.order_url.clone(),
        ];
        let flags = [
            "--user-url",
            "--inventory-url",
            "--payment-url",
            "--order-url",
        ];
        let mut channels = Vec::with_capacity(4);
        let names = ["user", "inventory", "payment", "order"];
        for ((url, flag), name) in urls.iter().zip(flags).zip(names) {
            let peer = PeerConfig {
                url: url.clone(),
                connect_timeout_ms: 3_000,
                call_timeout_ms: u64::try_from(CALL_TIMEOUT.as_millis()).unwrap_or(u64::MAX),
                ..PeerConfig::local(0)
            };
            let ch = channel(name, &peer)
                .map_err(|e| CliError::Usage(format!("{flag} {url:?} is not a usable URL: {e}")))?;
            channels.push(ch);
        }
        let channels: [PeerChannel; 4] = channels
            .try_into()
            .map_err(|_| CliError::Usage("internal: expected four channels".into()))?;
        Ok(Self { urls, channels })
    }

    fn index(service: Service) -> usize {
        match service {
            Service::User => 0,
            Service::Inventory => 1,
            Service::Payment => 2,
            Service::Order => 3,
        }
    }

    /// The URL of `service`.
    pub fn url(&self, service: Service) -> &str {
        &self.urls[Self::index(service)]
    }

    /// A user service client on the shared channel.
    pub fn user(&self) -> UserServiceClient<PeerChannel> {
        UserServiceClient::new(self.channels[Self::index(Service::User)].clone())
    }

    /// An inventory service client on the shared channel.
    pub fn inventory(&self) -> InventoryServiceClient<PeerChannel> {
        InventoryServiceClient::new(self.channels[Self::index(Service::Inventory)].clone())
    }

    /// A payment service client on the shared channel.
    pub fn payment(&self) -> PaymentServiceClient<PeerChannel> {
        PaymentServiceClient::new(self.channels[Self::index(Service::Payment)].clone())
    }

    /// An order service client on the shared channel.
    pub fn order(&self) -> OrderServiceClient<PeerChannel> {
        OrderServiceClient::new(self.channels[Self::index(Service::Order)].clone())
    }

    /// Awaits a call to `service` and unwraps its message; an unreachable service
    /// is named with its URL in the error.
    pub async fn call<T>(
        &self,
        service: Service,
        call: impl Future<Output = Result<Response<T>, Status>>,
    ) -> Result<T, CliError> {
        call.await.map(Response::into_inner).map_err(|status| {
            CliError::rpc(status).with_hint(
                Code::Unavailable,
                format!(
                    "{} service at {}; is it running? `make run` starts the stack",
                    service.name(),
                    self.url(service)
                ),
            )
        })
    }
}

/// A request without credentials (sign-up, log-in), with the call deadline.
pub fn anonymous<T>(message: T) -> Request<T> {
    let mut request = Request::new(message);
    request.set_timeout(CALL_TIMEOUT);
    request
}

/// A request carrying `authorization: Bearer <token>`, with the call deadline.
pub fn authed<T>(message: T, token: &str) -> Result<Request<T>, CliError> {
    let mut request = streaming_authed(message, token)?;
    request.set_timeout(CALL_TIMEOUT);
    Ok(request)
}

/// A request carrying the token but no deadline, for streams that run until
/// they are stopped.
pub fn streaming_authed<T>(message: T, token: &str) -> Result<Request<T>, CliError> {
    let value = MetadataValue::try_from(format!("Bearer {}", token.trim())).map_err(|_| {
        CliError::Usage("the access token contains characters that cannot be sent".into())
    })?;
    let mut request = Request::new(message);
    request.metadata_mut().insert("authorization", value);
    Ok(request)
}

/// Where `emporium login` keeps the token: `$XDG_CONFIG_HOME/emporium/token`, else
/// `$HOME/.config/emporium/token`.
pub fn token_path() -> Option<PathBuf> {
    token_path_from(
        std::env::var_os("XDG_CONFIG_HOME"),
        std::env::var_os("HOME"),
    )
}

/// [`token_path`] from explicit values of `XDG_CONFIG_HOME` and `HOME` (empty or
/// relative values are ignored, as the XDG spec says).
pub fn token_path_from(
    xdg_config_home: Option<OsString>,
    home: Option<OsString>,
) -> Option<PathBuf> {
    let absolute = |v: Option<OsString>| v.map(PathBuf::from).filter(|p| p.is_absolute());
    let config = absolute(xdg_config_home).or_else(|| absolute(home).map(|h| h.join(".config")))?;
    Some(config.join("emporium").join("token"))
}

/// The token to send: `--token`/`EMPORIUM_TOKEN` if given, else the token file;
/// an error telling how to log in when there is neither.
pub fn resolve_token(flag: Option<&str>) -> Result<String, CliError> {
    if let Some(t) = flag.map(str::trim).filter(|t| !t.is_empty()) {
        return Ok(t.to_owned());
    }
    let stored = match token_path() {
        Some(path) => read_token(&path)?,
        None => None,
    };
    stored.ok_or_else(|| {
        CliError::Usage(
            "not logged in: run `emporium login --email EMAIL --password PASSWORD` or set EMPORIUM_TOKEN"
                .into(),
        )
    })
}

/// Reads a stored token; a missing or empty file is `None`.
pub fn read_token(path: &Path) -> Result<Option<String>, CliError> {
    match fs::read_to_string(path) {
        Ok(s) => Ok(Some(s.trim().to_owned()).filter(|t| !t.is_empty())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(CliError::Io {
            what: format!("reading {}", path.display()),
            source,
        }),
    }
}

/// Stores `token` at `path`, readable by the owner only (0600, directory 0700).
/// Written to a temporary file first and renamed, so a crash never leaves half a
/// token behind.
pub fn write_token(path: &Path, token: &str) -> Result<(), CliError> {
    let io_err = |what: &str, source| CliError::Io {
        what: format!("{what} {}", path.display()),
        source,
    };
    if let Some(dir) = path.parent() {
        let mut builder = fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder
            .create(dir)
            .map_err(|e| io_err("creating the folder of", e))?;
    }
    let tmp = path.with_extension("tmp");
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let result = (|| {
        let mut file = options.open(&tmp)?;
        // The mode above applies only to new files; tighten a leftover one too.
        #[cfg(unix)]
        fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
        file.write_all(token.as_bytes())?;
        file.write_all(b"\n")?;
        file.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(|e| io_err("writing", e))
}

/// What a token says about its holder, read without checking the signature (the
/// services do that): only for showing the user who they are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenClaims {
    /// The user id (`sub`).
    pub user_id: String,
    /// Expiry, seconds since the Unix epoch (`exp`), if present.
    pub expires_at: Option<i64>,
}

/// Reads the claims of a JWT without verifying it.
pub fn peek_claims(token: &str) -> Result<TokenClaims, CliError> {
    let bad = || CliError::Usage("the access token is not a JWT; log in again".into());
    let payload = token.trim().split('.').nth(1).ok_or_else(bad)?;
    let bytes = base64url_decode(payload).ok_or_else(bad)?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).map_err(|_| bad())?;
    let user_id = claims
        .get("sub")
        .and_then(|v| v.as_str())
        .ok_or_else(bad)?
        .to_owned();
    Ok(TokenClaims {
        user_id,
        expires_at: claims.get("exp").and_then(serde_json::Value::as_i64),
    })
}

/// Decodes unpadded base64url (padding and the standard alphabet are accepted too).
pub fn base64url_decode(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.trim_end_matches('=').bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' | b'+' => 62,
            b'_' | b'/' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_path_prefers_xdg_then_home() {
        assert_eq!(
            token_path_from(Some("/x".into()), Some("/home/ada".into())),
            Some(PathBuf::from("/x/emporium/token"))
        );
        assert_eq!(
            token_path_from(Some("relative".into()), Some("/home/ada".into())),
            Some(PathBuf::from("/home/ada/.config/emporium/token"))
        );
        assert_eq!(token_path_from(None, None), None);
    }

    #[test]
    fn reads_the_subject_of_a_jwt() {
        // {"alg":"HS256"} . {"sub":"0199","exp":1700000000} . signature
        let token = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIwMTk5IiwiZXhwIjoxNzAwMDAwMDAwfQ.c2ln";
        assert_eq!(
            peek_claims(token).unwrap(),
            TokenClaims {
                user_id: "0199".into(),
                expires_at: Some(1_700_000_000)
            }
        );
        assert!(peek_claims("not-a-token").is_err());
    }

    #[test]
    fn base64url_round_trips_known_values() {
        assert_eq!(base64url_decode("aGVsbG8").unwrap(), b"hello");
        assert_eq!(
            base64url_decode("aGk_-A").unwrap(),
            [b'h', b'i', 0x3f, 0xf8]
        );
        assert_eq!(base64url_decode("a b"), None);
    }

    #[cfg(unix)]
    #[test]
    fn token_file_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("emporium-cli-test-{}", uuid::Uuid::new_v4()));
        let path = dir.join("emporium").join("token");
        write_token(&path, "abc").unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(read_token(&path).unwrap().as_deref(), Some("abc"));
        write_token(&path, "def").unwrap();
        assert_eq!(read_token(&path).unwrap().as_deref(), Some("def"));
        let _ = fs::remove_dir_all(&dir);
    }
}
