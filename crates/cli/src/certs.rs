//! `emporium dev-certs` (`make certs`): a development CA and one certificate per
//! service, for turning on mutual TLS locally.
//!
//! Each service certificate names `localhost`, `127.0.0.1` and `emporium-<svc>`
//! (the compose and Kubernetes service name) and is good for both ends of a
//! connection (serverAuth and clientAuth), so the order service presents the
//! same `order.pem` to its peers that it serves with. Keys are written `0600`.
//!
//! For development only: the output folder (`certs/`) is git-ignored and must
//! never be copied into an image. The CA's private key is not kept, so nothing
//! can sign further certificates with it; run again with `--force` for a fresh
//! set.

use std::{
    fs, io,
    path::Path,
    time::{Duration, SystemTime},
};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};

use crate::{cli::DevCertsArgs, error::CliError};

/// The services that get a certificate, in start order.
pub const SERVICES: [&str; 4] = ["user", "inventory", "payment", "order"];

/// Common name of the development CA.
pub const CA_NAME: &str = "Emporium dev CA";

const DAY: Duration = Duration::from_secs(24 * 60 * 60);
/// How long the CA is valid.
const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 60 * 60);
/// How long a service certificate is valid.
const LEAF_VALIDITY: Duration = Duration::from_secs(365 * 24 * 60 * 60);
/// Certificates start an hour in the past, so a clock slightly behind (another
/// container, a VM) does not see them as not yet valid.
const BACKDATE: Duration = Duration::from_secs(60 * 60);

/// One file to write.
#[derive(Debug)]
struct Output {
    name: String,
    pem: String,
    secret: bool,
}

/// Writes the CA and the service certificates into `args.out`; refuses to
/// replace existing ones unless `args.force`.
pub fn write_dev_certs(args: &DevCertsArgs) -> Result<(), CliError> {
    let out = &args.out;
    let names = file_names();
    if !args.force
        && let Some(existing) = names.iter().map(|n| out.join(n)).find(|p| p.exists())
    {
        return Err(CliError::Usage(format!(
            "{} already exists: pass --force (make certs FORCE=1) to replace the CA and \
             every certificate",
            existing.display()
        )));
    }

    let now = SystemTime::now();
    let files =
        generate(now).map_err(|e| CliError::Usage(format!("cannot generate certificates: {e}")))?;
    create_private_dir(out).map_err(|source| CliError::Io {
        what: format!("creating {}", out.display()),
        source,
    })?;
    for file in &files {
        let path = out.join(&file.name);
        write_file(&path, &file.pem, file.secret).map_err(|source| CliError::Io {
            what: format!("writing {}", path.display()),
            source,
        })?;
    }

    let ca_until = date(now + CA_VALIDITY);
    let leaf_until = date(now + LEAF_VALIDITY);
    let show = |name: &str| out.join(name).display().to_string();
    outln!(
        "wrote a development CA and one certificate per service to {}/ \
         (git-ignored; never put it in an image):",
        out.display()
    )?;
    outln!("  {:<26} {CA_NAME}, valid until {ca_until}", show("ca.pem"))?;
    for svc in SERVICES {
        outln!(
            "  {:<26} spiffe://emporium/{svc}, emporium-{svc}, localhost, 127.0.0.1; server + client; valid until {leaf_until}",
            show(&format!("{svc}.pem"))
        )?;
        outln!(
            "  {:<26} its private key (0600)",
            show(&format!("{svc}-key.pem"))
        )?;
    }
    outln!("mutual TLS for a service, e.g. the user service:")?;
    outln!(
        "  EMPORIUM_SERVER__TLS__ENABLED=true EMPORIUM_SERVER__TLS__CERT_FILE={} \
         EMPORIUM_SERVER__TLS__KEY_FILE={} EMPORIUM_SERVER__TLS__CA_FILE={}",
        show("user.pem"),
        show("user-key.pem"),
        show("ca.pem")
    )?;
    outln!(
        "and its callers: https:// URLs plus EMPORIUM_PEERS__<PEER>__TLS__* (see README, \"mTLS\")"
    )
}

/// Every file this command writes, relative to the output folder.
fn file_names() -> Vec<String> {
    let mut names = vec!["ca.pem".to_owned()];
    for svc in SERVICES {
        names.push(format!("{svc}.pem"));
        names.push(format!("{svc}-key.pem"));
    }
    names
}

/// The CA certificate and, per service, a certificate and its key, as PEM.
fn generate(now: SystemTime) -> Result<Vec<Output>, rcgen::Error> {
    let not_before = now - BACKDATE;

    let mut ca = CertificateParams::default();
    ca.distinguished_name = name(CA_NAME);
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    ca.not_before = not_before.into();
    ca.not_after = (now + CA_VALIDITY).into();
    let ca_key = KeyPair::generate()?;
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca, ca_key);

    let mut files = vec![Output {
        name: "ca.pem".into(),
        pem: ca_cert.pem(),
        secret: false,
    }];
    for svc in SERVICES {
        let host = format!("emporium-{svc}");
        let mut leaf = CertificateParams::new(vec![
            "localhost".to_owned(),
            "127.0.0.1".to_owned(),
            host.clone(),
        ])?;
        // The service identity the internal RPCs check under mutual TLS.
        leaf.subject_alt_names.push(SanType::URI(
            format!("{}{svc}", emporium_common::tls::SERVICE_URI_PREFIX).try_into()?,
        ));
        leaf.distinguished_name = name(&host);
        leaf.is_ca = IsCa::ExplicitNoCa;
        leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        leaf.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        leaf.use_authority_key_identifier_extension = true;
        leaf.not_before = not_before.into();
        leaf.not_after = (now + LEAF_VALIDITY).into();
        let key = KeyPair::generate()?;
        let cert = leaf.signed_by(&key, &issuer)?;
        files.push(Output {
            name: format!("{svc}.pem"),
            pem: cert.pem(),
            secret: false,
        });
        files.push(Output {
            name: format!("{svc}-key.pem"),
            pem: key.serialize_pem(),
            secret: true,
        });
    }
    Ok(files)
}

fn name(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Emporium (development)");
    dn.push(DnType::CommonName, common_name);
    dn
}

/// `YYYY-MM-DD` (UTC) of `t`.
fn date(t: SystemTime) -> String {
    let days = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
        / DAY.as_secs();
    // Days since 1970-01-01 to a civil date (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

/// Creates `dir` (and parents) readable by the owner only when it is new.
fn create_private_dir(dir: &Path) -> io::Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

/// Writes `path` afresh; a `secret` file is created `0600` (never widened
/// first, and an old file's looser mode is not inherited).
fn write_file(path: &Path, contents: &str, secret: bool) -> io::Result<()> {
    use io::Write as _;
    match fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, if secret { 0o600 } else { 0o644 });
    #[cfg(not(unix))]
    let _ = secret;
    options.open(path)?.write_all(contents.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_civil_utc() {
        let at = |secs: u64| date(SystemTime::UNIX_EPOCH + Duration::from_secs(secs));
        assert_eq!(at(0), "1970-01-01");
        assert_eq!(at(951_782_400), "2000-02-29");
        assert_eq!(at(1_767_225_599), "2025-12-31");
    }

    #[test]
    fn writes_every_file_keys_private_and_refuses_to_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let args = DevCertsArgs {
            out: dir.path().join("certs"),
            force: false,
        };
        write_dev_certs(&args).unwrap();
        for name in file_names() {
            let path = args.out.join(&name);
            let pem = fs::read_to_string(&path).unwrap();
            if name.ends_with("-key.pem") {
                assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"), "{name}");
                #[cfg(unix)]
                {
                    use std::os::unix::fs::PermissionsExt as _;
                    let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
                    assert_eq!(mode, 0o600, "{name}");
                }
            } else {
                assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"), "{name}");
            }
        }

        let before = fs::read(args.out.join("ca.pem")).unwrap();
        let err = write_dev_certs(&args).unwrap_err().to_string();
        assert!(err.contains("already exists"), "{err}");
        assert!(err.contains("--force"), "{err}");
        assert_eq!(fs::read(args.out.join("ca.pem")).unwrap(), before);

        let forced = DevCertsArgs {
            force: true,
            ..args
        };
        write_dev_certs(&forced).unwrap();
        assert_ne!(fs::read(forced.out.join("ca.pem")).unwrap(), before);
    }
}
