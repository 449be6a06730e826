//! The environment layer of [`super::load`].
//!
//! Each `EMPORIUM_*` variable is matched to the setting it names
//! (`EMPORIUM_SERVER__GRPC_ADDR` → `server.grpc_addr`) and typed by that
//! setting's default: text settings take the value as written (figment alone
//! would turn a password of digits into a number and then refuse it), the others
//! are parsed (`true`, `250`, `[{key_id="k1", …}]`). A variable ending in `_FILE`
//! that names no setting of its own gives the setting before the suffix the
//! content of that file, trailing newline trimmed: how Docker and Kubernetes
//! hand out secrets.
//!
//! Variables for blocks this service does not have (another service's) are
//! ignored; an unknown key inside one of its own blocks is reported as a likely
//! typo; a variable that was renamed stops the process naming its new name.

use std::{collections::BTreeMap, ffi::OsString, str::FromStr as _};

use figment::value::Value as FigValue;
use serde::Serialize;
use serde_json::Value;

use super::{ConfigError, env_name};

/// Variables that were renamed: a process started with an old one refuses to
/// start rather than silently fall back to a default.
pub const RENAMED: [(&str, &str); 4] = [
    ("EMPORIUM_ADMIN_EMAIL", "EMPORIUM_USER__ADMIN_EMAIL"),
    ("EMPORIUM_ADMIN_PASSWORD", "EMPORIUM_USER__ADMIN_PASSWORD"),
    ("EMPORIUM_CURRENCY", "EMPORIUM_INVENTORY__CURRENCY"),
    (
        "EMPORIUM_CLAIM_LEASE_MS",
        "EMPORIUM_PAYMENT__CLAIM_LEASE_MS",
    ),
];

const PREFIX: &str = "EMPORIUM_";
const FILE_SUFFIX: &str = "_file";

/// What a setting's default says about how to read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Text (or unset text): the value as written.
    Text,
    /// Anything else: parsed.
    Parsed,
}

/// The settings the environment gives, ready to merge over the defaults.
#[derive(Debug, Default)]
pub struct EnvLayer {
    /// Dotted key and value, in a stable order.
    pub values: Vec<(String, FigValue)>,
    /// Likely typos: variables inside this service's blocks that name nothing.
    pub unknown: Vec<String>,
}

impl EnvLayer {
    /// Reads `vars` (the process environment in production) against the
    /// settings that `defaults` has.
    pub fn read<T: Serialize>(
        defaults: &T,
        vars: impl IntoIterator<Item = (OsString, OsString)>,
    ) -> Result<Self, ConfigError> {
        let tree = serde_json::to_value(defaults)
            .map_err(|e| ConfigError::Load(format!("defaults do not serialize: {e}")))?;
        let mut known = BTreeMap::new();
        leaves(&tree, String::new(), &mut known);
        let blocks: Vec<&str> = match &tree {
            Value::Object(map) => map
                .iter()
                .filter(|(_, v)| v.is_object())
                .map(|(k, _)| k.as_str())
                .collect(),
            _ => Vec::new(),
        };

        let mut vars: Vec<(String, String)> = vars
            .into_iter()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
            .filter(|(k, _)| k.starts_with(PREFIX))
            .collect();
        vars.sort();
        if let Some((old, new)) = RENAMED
            .iter()
            .find(|(old, _)| vars.iter().any(|(k, _)| k == old))
        {
            return Err(ConfigError::Renamed { old, new });
        }

        let mut layer = Self::default();
        for (name, raw) in vars {
            let key = name[PREFIX.len()..].to_lowercase().replace("__", ".");
            if let Some(kind) = known.get(&key) {
                layer.values.push((key.clone(), value(&key, *kind, &raw)?));
                continue;
            }
            if let Some(target) = key.strip_suffix(FILE_SUFFIX)
                && let Some(kind) = known.get(target)
            {
                let content = std::fs::read_to_string(&raw).map_err(|e| {
                    ConfigError::invalid(&format!("{target}{FILE_SUFFIX}"), format!("{raw}: {e}"))
                })?;
                let content = content.strip_suffix('\n').unwrap_or(&content);
                let content = content.strip_suffix('\r').unwrap_or(content);
                layer
                    .values
                    .push((target.to_owned(), value(target, *kind, content)?));
                continue;
            }
            let block = key.split('.').next().unwrap_or_default();
            if key.contains('.') && blocks.contains(&block) {
                layer.unknown.push(name);
            }
        }
        Ok(layer)
    }
}

fn value(key: &str, kind: Kind, raw: &str) -> Result<FigValue, ConfigError> {
    match kind {
        Kind::Text => Ok(FigValue::from(raw.to_owned())),
        Kind::Parsed => FigValue::from_str(raw)
            .map_err(|e| ConfigError::invalid(key, format!("cannot parse {}: {e}", env_name(key)))),
    }
}

/// Every leaf setting of `tree` with the kind its default implies. Arrays are
/// leaves: a list is set whole.
fn leaves(tree: &Value, prefix: String, out: &mut BTreeMap<String, Kind>) {
    match tree {
        Value::Object(map) => {
            for (k, v) in map {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                leaves(v, key, out);
            }
        }
        Value::String(_) | Value::Null => {
            out.insert(prefix, Kind::Text);
        }
        _ => {
            out.insert(prefix, Kind::Parsed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Serialize, Deserialize)]
    struct Sample {
        dev_mode: bool,
        server: Server,
        payment: Payment,
    }
    #[derive(Debug, Serialize, Deserialize)]
    struct Server {
        port: u16,
        password: String,
        token: Option<String>,
        proxies: Vec<String>,
    }
    #[derive(Debug, Serialize, Deserialize)]
    struct Payment {
        claim_lease_ms: u64,
    }

    fn defaults() -> Sample {
        Sample {
            dev_mode: false,
            server: Server {
                port: 1,
                password: "x".into(),
                token: None,
                proxies: Vec::new(),
            },
            payment: Payment { claim_lease_ms: 5 },
        }
    }

    fn vars(list: &[(&str, &str)]) -> Vec<(OsString, OsString)> {
        list.iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect()
    }

    fn merged(list: &[(&str, &str)]) -> Result<Sample, String> {
        let layer = EnvLayer::read(&defaults(), vars(list)).map_err(|e| e.to_string())?;
        let mut f = figment::Figment::from(figment::providers::Serialized::defaults(defaults()));
        for kv in layer.values {
            f = f.merge(kv);
        }
        f.extract().map_err(|e| e.to_string())
    }

    #[test]
    fn text_settings_keep_digits_and_others_are_parsed() {
        let s = merged(&[
            ("EMPORIUM_SERVER__PASSWORD", "0042"),
            ("EMPORIUM_SERVER__TOKEN", "12345"),
            ("EMPORIUM_SERVER__PORT", "8080"),
            (
                "EMPORIUM_SERVER__PROXIES",
                r#"["10.0.0.0/8", "192.168.0.0/16"]"#,
            ),
            ("EMPORIUM_DEV_MODE", "true"),
            ("EMPORIUM_PAYMENT__CLAIM_LEASE_MS", "9000"),
        ])
        .unwrap();
        assert_eq!(s.server.password, "0042");
        assert_eq!(s.server.token.as_deref(), Some("12345"));
        assert_eq!(s.server.port, 8080);
        assert_eq!(s.server.proxies, ["10.0.0.0/8", "192.168.0.0/16"]);
        assert!(s.dev_mode);
        assert_eq!(s.payment.claim_lease_ms, 9000);
    }

    #[test]
    fn file_variants_read_the_file_without_its_last_newline() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("secret");
        std::fs::write(&secret, "from-a-file\n").unwrap();
        let s = merged(&[("EMPORIUM_SERVER__PASSWORD_FILE", secret.to_str().unwrap())]).unwrap();
        assert_eq!(s.server.password, "from-a-file");
        let err = merged(&[("EMPORIUM_SERVER__PASSWORD_FILE", "/nonexistent/x")]).unwrap_err();
        assert!(err.contains("EMPORIUM_SERVER__PASSWORD_FILE"), "{err}");
        assert!(err.contains("/nonexistent/x"), "{err}");
    }

    #[test]
    fn renamed_variables_stop_the_process_naming_the_new_one() {
        let err = merged(&[("EMPORIUM_CURRENCY", "CHF")]).unwrap_err();
        assert_eq!(
            err,
            "EMPORIUM_CURRENCY was renamed: set EMPORIUM_INVENTORY__CURRENCY instead"
        );
    }

    #[test]
    fn typos_in_own_blocks_are_reported_and_other_services_settings_ignored() {
        let layer = EnvLayer::read(
            &defaults(),
            vars(&[
                ("EMPORIUM_SERVER__PROT", "1"),
                ("EMPORIUM_USER__ADMIN_EMAIL", "a@b.c"),
                ("EMPORIUM_REQUIRE_POSTGRES", "1"),
                ("OTHER", "1"),
            ]),
        )
        .unwrap();
        assert_eq!(layer.unknown, ["EMPORIUM_SERVER__PROT"]);
        assert!(layer.values.is_empty());
    }
}
