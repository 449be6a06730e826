//! The route table: every method of the descriptor set that carries a
//! `google.api.http` rule (and its `additional_bindings`) becomes a route. No
//! route is written by hand: annotating an RPC in `proto/` is what adds it.
//!
//! Path templates follow `google/api/http.proto`: literal segments, `*`,
//! `{field}` (or `{field=*}`) variables naming a field path of the request, and
//! an optional `:verb` suffix. Multi-segment variables (`**`, `{name=a/*}`) are
//! refused at start, with the method named.

use http::Method;
use prost_reflect::{
    DescriptorPool, DynamicMessage, FieldDescriptor, Kind, MessageDescriptor, MethodDescriptor,
    Value,
};

/// The extension that carries a method's HTTP rule.
const HTTP_EXTENSION: &str = "google.api.http";

/// A route table that cannot be built from the descriptor set.
#[derive(Debug, thiserror::Error)]
#[error("{method}: {reason}")]
pub struct RouteError {
    /// The method whose rule is wrong (`pkg.Service/Method`).
    pub method: String,
    /// What is wrong with it.
    pub reason: String,
}

/// One segment of a path template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    /// Matches exactly this text.
    Literal(String),
    /// `*`: matches any one segment, bound to nothing.
    Any,
    /// `{a.b}`: matches one segment and binds it to the field path.
    Field(Vec<String>),
}

/// A parsed path template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    /// The segments between slashes.
    pub segments: Vec<Segment>,
    /// The custom verb after the last `:`, if any.
    pub verb: Option<String>,
}

impl Template {
    /// Parses `template` (for example `/v1/orders/{order_id}:cancel`).
    pub fn parse(template: &str) -> Result<Self, String> {
        let rest = template
            .strip_prefix('/')
            .ok_or_else(|| format!("template `{template}` must start with `/`"))?;
        // The verb follows the last `:` outside braces.
        let (path, verb) = match rest.rfind(':') {
            Some(i) if !rest[i..].contains('}') => (&rest[..i], Some(rest[i + 1..].to_owned())),
            _ => (rest, None),
        };
        let mut segments = Vec::new();
        for seg in path.split('/') {
            segments.push(if seg == "*" {
                Segment::Any
            } else if let Some(inner) = seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                let field = match inner.split_once('=') {
                    None => inner,
                    Some((field, "*")) => field,
                    Some(_) => {
                        return Err(format!(
                            "template `{template}`: only single-segment variables are supported"
                        ));
                    }
                };
                Segment::Field(field.split('.').map(str::to_owned).collect())
            } else if seg == "**" || seg.is_empty() || seg.contains(['{', '}']) {
                return Err(format!(
                    "template `{template}`: unsupported segment `{seg}`"
                ));
            } else {
                Segment::Literal(seg.to_owned())
            });
        }
        Ok(Self { segments, verb })
    }

    /// The variables' values if `path` (already split off its query) matches,
    /// percent-decoded.
    pub fn matches(&self, path: &str) -> Option<Vec<(Vec<String>, String)>> {
        let rest = path.strip_prefix('/')?;
        let rest = match &self.verb {
            Some(verb) => rest.strip_suffix(verb.as_str())?.strip_suffix(':')?,
            None => rest,
        };
        let parts: Vec<&str> = rest.split('/').collect();
        if parts.len() != self.segments.len() {
            return None;
        }
        let mut bound = Vec::new();
        let last = parts.len() - 1;
        for (i, (seg, part)) in self.segments.iter().zip(&parts).enumerate() {
            if part.is_empty() {
                return None;
            }
            // A last segment holding `:` belongs to a route with a verb.
            if i == last && self.verb.is_none() && part.contains(':') {
                return None;
            }
            match seg {
                Segment::Literal(l) if l == part => {}
                Segment::Literal(_) => return None,
                Segment::Any => {}
                Segment::Field(f) => bound.push((f.clone(), percent_decode(part)?)),
            }
        }
        Some(bound)
    }

    /// The field paths the template binds.
    pub fn fields(&self) -> impl Iterator<Item = &Vec<String>> {
        self.segments.iter().filter_map(|s| match s {
            Segment::Field(f) => Some(f),
            _ => None,
        })
    }
}

/// Decodes `%XX` escapes; `None` for a malformed escape or invalid UTF-8.
pub fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Where the request body goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    /// No body: every field not in the path comes from the query string.
    None,
    /// `*`: the body is the request message (less the path's fields).
    All,
    /// One top-level field of the request.
    Field(String),
}

/// One HTTP binding of one method.
#[derive(Debug, Clone)]
pub struct Route {
    /// The HTTP method.
    pub method: Method,
    /// The template as written in the contract.
    pub pattern: String,
    /// The parsed template.
    pub template: Template,
    /// Where the body goes.
    pub body: Body,
    /// The RPC.
    pub rpc: MethodDescriptor,
}

impl Route {
    /// `/pkg.Service/Method`, the gRPC path.
    pub fn grpc_path(&self) -> String {
        format!(
            "/{}/{}",
            self.rpc.parent_service().full_name(),
            self.rpc.name()
        )
    }
}

/// What a request's method and path found.
#[derive(Debug)]
pub enum Found<'a> {
    /// A route, and the path variables' values.
    Route(&'a Route, Vec<(Vec<String>, String)>),
    /// The path exists, with other methods (for `Allow`).
    WrongMethod(Vec<Method>),
    /// No route has this path.
    NotFound,
}

/// Every annotated method's routes.
#[derive(Debug, Clone)]
pub struct RouteTable {
    routes: Vec<Route>,
}

impl RouteTable {
    /// Reads every service's methods in `pool` and keeps those with a rule.
    /// Server-streaming methods become GET routes served as Server-Sent Events
    /// or WebSocket; client streams have no HTTP mapping and are refused.
    pub fn from_pool(pool: &DescriptorPool) -> Result<Self, RouteError> {
        let mut routes = Vec::new();
        let Some(ext) = pool.get_extension_by_name(HTTP_EXTENSION) else {
            return Ok(Self { routes });
        };
        for service in pool.services() {
            for rpc in service.methods() {
                let options = rpc.options();
                if !options.has_extension(&ext) {
                    continue;
                }
                let name = format!("{}/{}", service.full_name(), rpc.name());
                let err = |reason: String| RouteError {
                    method: name.clone(),
                    reason,
                };
                if rpc.is_client_streaming() {
                    return Err(err("client-streaming methods have no HTTP route".into()));
                }
                let Value::Message(rule) = options.get_extension(&ext).into_owned() else {
                    return Err(err("google.api.http is not a message".into()));
                };
                let mut rules = vec![rule.clone()];
                if let Some(Value::List(more)) = rule
                    .get_field_by_name("additional_bindings")
                    .map(|v| v.into_owned())
                {
                    rules.extend(more.into_iter().filter_map(|v| match v {
                        Value::Message(m) => Some(m),
                        _ => None,
                    }));
                }
                for rule in rules {
                    routes.push(route(&rpc, &rule).map_err(err)?);
                }
            }
        }
        // Literal segments before variables, so `/v1/products:x` style routes and
        // fixed paths win over a variable that could also match.
        routes.sort_by_key(|r| {
            std::cmp::Reverse(
                r.template
                    .segments
                    .iter()
                    .filter(|s| matches!(s, Segment::Literal(_)))
                    .count(),
            )
        });
        Ok(Self { routes })
    }

    /// Every route, most specific first.
    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// The route for `method` and `path`.
    pub fn find(&self, method: &Method, path: &str) -> Found<'_> {
        let mut allowed = Vec::new();
        for route in &self.routes {
            if let Some(bound) = route.template.matches(path) {
                if route.method == *method {
                    return Found::Route(route, bound);
                }
                if !allowed.contains(&route.method) {
                    allowed.push(route.method.clone());
                }
            }
        }
        if allowed.is_empty() {
            Found::NotFound
        } else {
            Found::WrongMethod(allowed)
        }
    }
}

fn string_field(rule: &DynamicMessage, name: &str) -> String {
    rule.get_field_by_name(name)
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// One rule of one method as a route, its field paths checked against the
/// request message.
fn route(rpc: &MethodDescriptor, rule: &DynamicMessage) -> Result<Route, String> {
    let mut found = None;
    for (field, method) in [
        ("get", Method::GET),
        ("put", Method::PUT),
        ("post", Method::POST),
        ("delete", Method::DELETE),
        ("patch", Method::PATCH),
    ] {
        if rule.has_field_by_name(field) {
            found = Some((method, string_field(rule, field)));
        }
    }
    if let Some(Value::Message(custom)) = rule.get_field_by_name("custom").map(|v| v.into_owned())
        && rule.has_field_by_name("custom")
    {
        let kind = string_field(&custom, "kind");
        let method = Method::from_bytes(kind.as_bytes())
            .map_err(|_| format!("custom method `{kind}` is not an HTTP method"))?;
        found = Some((method, string_field(&custom, "path")));
    }
    let (method, pattern) = found.ok_or("the rule has no pattern")?;
    let template = Template::parse(&pattern)?;
    let input = rpc.input();
    for path in template.fields() {
        let field = field_path(&input, path)?;
        if field.is_list() || field.is_map() || matches!(field.kind(), Kind::Message(_)) {
            return Err(format!(
                "path variable `{}` must name a singular scalar field",
                path.join(".")
            ));
        }
    }
    let body = match string_field(rule, "body").as_str() {
        "" => Body::None,
        "*" => Body::All,
        name => {
            input
                .get_field_by_name(name)
                .ok_or_else(|| format!("body field `{name}` is not in {}", input.full_name()))?;
            Body::Field(name.to_owned())
        }
    };
    Ok(Route {
        method,
        pattern,
        template,
        body,
        rpc: rpc.clone(),
    })
}

/// The field a dotted path names, starting at `message`.
pub fn field_path(message: &MessageDescriptor, path: &[String]) -> Result<FieldDescriptor, String> {
    let mut message = message.clone();
    let mut field = None;
    for (i, name) in path.iter().enumerate() {
        let f = message
            .get_field_by_name(name)
            .or_else(|| message.get_field_by_json_name(name))
            .ok_or_else(|| {
                format!(
                    "`{}` is not a field of {}",
                    path.join("."),
                    message.full_name()
                )
            })?;
        if i + 1 < path.len() {
            match f.kind() {
                Kind::Message(m) if !f.is_list() => message = m,
                _ => {
                    return Err(format!(
                        "`{}` does not name a message field",
                        path[..=i].join(".")
                    ));
                }
            }
        }
        field = Some(f);
    }
    field.ok_or_else(|| "empty field path".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_parse_and_match() {
        let t = Template::parse("/v1/orders/{order_id}:cancel").unwrap();
        assert_eq!(t.verb.as_deref(), Some("cancel"));
        assert_eq!(
            t.matches("/v1/orders/abc:cancel").unwrap(),
            vec![(vec!["order_id".to_owned()], "abc".to_owned())]
        );
        assert!(t.matches("/v1/orders/abc").is_none());
        let get = Template::parse("/v1/orders/{order_id}").unwrap();
        assert!(get.matches("/v1/orders/abc:cancel").is_none());
        assert_eq!(get.matches("/v1/orders/a%20b").unwrap()[0].1, "a b");
        assert!(get.matches("/v1/orders/").is_none());
        assert!(get.matches("/v1/orders/a/b").is_none());
        let auth = Template::parse("/v1/users:authenticate").unwrap();
        assert!(auth.matches("/v1/users:authenticate").unwrap().is_empty());
        assert!(auth.matches("/v1/users").is_none());
        assert!(Template::parse("/v1/{name=**}").is_err());
        assert!(Template::parse("v1/x").is_err());
    }

    #[test]
    fn the_contracts_give_the_public_routes_and_no_internal_ones() {
        let pool = DescriptorPool::decode(emporium_proto::FILE_DESCRIPTOR_SET).unwrap();
        let table = RouteTable::from_pool(&pool).unwrap();
        let mut seen: Vec<String> = table
            .routes()
            .iter()
            .map(|r| format!("{} {} {}", r.method, r.pattern, r.grpc_path()))
            .collect();
        seen.sort();
        for want in [
            "POST /v1/users emporium.user.v1.UserService/CreateUser",
            "POST /v1/users:authenticate emporium.user.v1.UserService/Authenticate",
            "GET /v1/users/{user_id} emporium.user.v1.UserService/GetUser",
            "GET /v1/products emporium.inventory.v1.InventoryService/ListProducts",
            "GET /v1/products/{product_id} emporium.inventory.v1.InventoryService/GetProduct",
            "POST /v1/products emporium.inventory.v1.InventoryService/CreateProduct",
            "POST /v1/orders emporium.order.v1.OrderService/CreateOrder",
            "GET /v1/orders emporium.order.v1.OrderService/ListOrders",
            "GET /v1/orders/{order_id} emporium.order.v1.OrderService/GetOrder",
            "POST /v1/orders/{order_id}:cancel emporium.order.v1.OrderService/CancelOrder",
            "GET /v1/payments/{payment_id} emporium.payment.v1.PaymentService/GetPayment",
            "GET /v1/orders/{order_id}:watch emporium.order.v1.OrderService/WatchOrderUpdates",
            "GET /v1/orders:watch emporium.order.v1.OrderService/WatchOrderUpdates",
        ] {
            let (route, rpc) = want.rsplit_once(' ').unwrap();
            let line = format!("{route} /{rpc}");
            assert!(seen.contains(&line), "{line} missing from {seen:#?}");
        }
        for internal in [
            "ReserveStock",
            "CommitReservation",
            "ReleaseReservation",
            "Charge",
            "Refund",
            "VoidCharge",
        ] {
            assert!(
                !seen.iter().any(|r| r.ends_with(&format!("/{internal}"))),
                "{internal} must have no route"
            );
        }
        assert!(matches!(
            table.find(&Method::POST, "/v1/orders/x:cancel"),
            Found::Route(r, _) if r.rpc.name() == "CancelOrder"
        ));
        assert!(matches!(
            table.find(&Method::DELETE, "/v1/orders"),
            Found::WrongMethod(m) if m.contains(&Method::GET) && m.contains(&Method::POST)
        ));
        assert!(matches!(
            table.find(&Method::GET, "/v1/nothing"),
            Found::NotFound
        ));
    }
}
