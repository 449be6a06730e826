//! The user domain: newtypes that can only hold valid values (parse, don't
//! validate), and the user itself. Knows nothing of gRPC or SQL.

use std::fmt;

use emporium_common::auth::Role;
use uuid::Uuid;

/// A user's id: a UUID, v7 when generated here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct UserId(pub Uuid);

impl UserId {
    /// A new time-ordered id.
    pub fn generate() -> Self {
        Self(Uuid::now_v7())
    }

    /// Parses the canonical text form.
    pub fn parse(s: &str) -> Result<Self, &'static str> {
        if s.is_empty() {
            return Err("is required");
        }
        // Only the hyphenated form: one spelling per id keeps lookups exact.
        if s.len() != 36 {
            return Err("must be a UUID like 0190b1d4-8b9c-7def-8123-456789abcdef");
        }
        Uuid::try_parse(s)
            .map(Self)
            .map_err(|_| "must be a UUID like 0190b1d4-8b9c-7def-8123-456789abcdef")
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

/// A syntactically valid email address, kept as typed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email(String);

impl Email {
    /// Longest address accepted (RFC 5321's path limit).
    pub const MAX_LEN: usize = 254;

    /// Checks the shape of an address: one `@`, a local part of at most 64
    /// characters, a dotted domain of letters, digits and hyphens; no spaces or
    /// control characters. Deliverability is not this service's business.
    pub fn parse(s: &str) -> Result<Self, &'static str> {
        if s.is_empty() {
            return Err("is required");
        }
        if s.len() > Self::MAX_LEN {
            return Err("must be at most 254 characters");
        }
        if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err("must not contain spaces or control characters");
        }
        let Some((local, domain)) = s.split_once('@') else {
            return Err("must contain @");
        };
        if local.is_empty() || local.len() > 64 || domain.contains('@') {
            return Err("must be a single local part, @, and a domain");
        }
        let labels: Vec<&str> = domain.split('.').collect();
        let label_ok = |l: &&str| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_alphanumeric() || c == '-')
        };
        if labels.len() < 2 || !labels.iter().all(label_ok) {
            return Err("must have a domain like example.com");
        }
        Ok(Self(s.to_owned()))
    }

    /// The address as typed.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The form uniqueness and sign-in compare: lowercase.
    pub fn key(&self) -> String {
        self.0.to_lowercase()
    }
}

/// A display name: 1 to 200 characters after trimming, no control characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserName(String);

impl UserName {
    /// Parses and trims a name.
    pub fn parse(s: &str) -> Result<Self, &'static str> {
        let t = s.trim();
        if t.is_empty() {
            return Err("is required");
        }
        if t.chars().count() > 200 {
            return Err("must be at most 200 characters");
        }
        if t.chars().any(char::is_control) {
            return Err("must not contain control characters");
        }
        Ok(Self(t.to_owned()))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A password in the clear, on its way to the hasher. Never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl Password {
    /// 8 to 128 characters, no NUL.
    pub fn parse(s: &str) -> Result<Self, &'static str> {
        let n = s.chars().count();
        if n == 0 {
            return Err("is required");
        }
        if n < 8 {
            return Err("must be at least 8 characters");
        }
        if n > 128 {
            return Err("must be at most 128 characters");
        }
        if s.contains('\0') {
            return Err("must not contain NUL");
        }
        Ok(Self(s.to_owned()))
    }

    /// The clear text, for the hasher only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password([redacted])")
    }
}

/// A set of roles: non-empty, no duplicates, in a stable order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Roles(Vec<Role>);

impl Roles {
    /// Only the customer role.
    pub fn customer() -> Self {
        Self(vec![Role::Customer])
    }

    /// The admin and customer roles (an admin can also shop).
    pub fn admin() -> Self {
        Self(vec![Role::Customer, Role::Admin])
    }

    /// Builds a set; empty is an error.
    pub fn new(roles: impl IntoIterator<Item = Role>) -> Result<Self, &'static str> {
        let mut v: Vec<Role> = Vec::new();
        for r in roles {
            if !v.contains(&r) {
                v.push(r);
            }
        }
        if v.is_empty() {
            return Err("must contain at least one role");
        }
        v.sort_by_key(|r| *r as u8);
        Ok(Self(v))
    }

    /// The roles.
    pub fn as_slice(&self) -> &[Role] {
        &self.0
    }

    /// Stored form: comma-separated names.
    pub fn to_db(&self) -> String {
        self.0
            .iter()
            .map(|r| r.as_str())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Parses the stored form.
    pub fn from_db(s: &str) -> Option<Self> {
        let roles: Option<Vec<Role>> = s.split(',').map(Role::parse).collect();
        Self::new(roles?).ok()
    }
}

/// A user as the domain sees it (no password hash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// Id.
    pub id: UserId,
    /// Email as typed.
    pub email: String,
    /// Display name.
    pub name: String,
    /// Roles.
    pub roles: Roles,
    /// Whether the user may sign in and order.
    pub active: bool,
    /// Creation time, µs since the epoch.
    pub created_at: i64,
    /// Last change, µs since the epoch.
    pub updated_at: i64,
}

/// A sign-up.
#[derive(Debug, Clone)]
pub struct NewUser {
    /// Email.
    pub email: Email,
    /// Name.
    pub name: UserName,
    /// Password in the clear.
    pub password: Password,
}

/// The fields an update may change; `None` leaves a field alone.
#[derive(Debug, Clone, Default)]
pub struct UserChanges {
    /// New email.
    pub email: Option<Email>,
    /// New name.
    pub name: Option<UserName>,
    /// New password.
    pub password: Option<Password>,
    /// New roles (admin-only).
    pub roles: Option<Roles>,
    /// Activate or deactivate (admin-only).
    pub active: Option<bool>,
}

impl UserChanges {
    /// Whether the update touches a field only admins may change.
    pub fn needs_admin(&self) -> bool {
        self.roles.is_some() || self.active.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails() {
        for ok in [
            "a@b.co",
            "Jane.Doe+shop@Example.COM",
            "x@sub.domain-1.org",
            "ü@exämple.de",
        ] {
            assert!(Email::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "", "plain", "@b.co", "a@", "a@b", "a@@b.co", "a b@c.de", "a@-b.co", "a@b..co",
            "a\0@b.co", "a@b.co\n",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad:?}");
        }
        assert!(Email::parse(&format!("{}@b.co", "a".repeat(65))).is_err());
        assert_eq!(
            Email::parse("Jane@Example.COM").unwrap().key(),
            "jane@example.com"
        );
    }

    #[test]
    fn names_and_passwords() {
        assert_eq!(UserName::parse("  Ada  ").unwrap().as_str(), "Ada");
        assert!(UserName::parse("   ").is_err());
        assert!(UserName::parse(&"x".repeat(201)).is_err());
        assert!(UserName::parse("a\u{7}b").is_err());
        assert!(Password::parse("short").is_err());
        assert!(Password::parse("long enough").is_ok());
        assert!(Password::parse(&"p".repeat(129)).is_err());
        assert!(Password::parse("nul\0inside").is_err());
        assert_eq!(
            format!("{:?}", Password::parse("secret-pw").unwrap()),
            "Password([redacted])"
        );
    }

    #[test]
    fn ids() {
        let id = UserId::generate();
        assert_eq!(UserId::parse(&id.to_string()), Ok(id));
        assert!(UserId::parse("").is_err());
        assert!(UserId::parse("not-a-uuid").is_err());
        assert!(UserId::parse(&id.0.simple().to_string()).is_err());
    }

    #[test]
    fn roles_round_trip() {
        let r = Roles::new([Role::Admin, Role::Customer, Role::Admin]).unwrap();
        assert_eq!(r.to_db(), "customer,admin");
        assert_eq!(Roles::from_db("customer,admin"), Some(r));
        assert!(Roles::new([]).is_err());
        assert_eq!(Roles::from_db("root"), None);
    }
}
