//! HTTP ⇄ protobuf for one route: the request message built from the path
//! variables, the query string and the JSON body (canonical proto3 JSON,
//! lowerCamelCase or proto field names, unknown fields refused); the answer
//! message written back as canonical proto3 JSON; and the unary gRPC call in
//! between, through a codec that passes encoded messages as they are.

use prost::Message as _;
use prost::bytes::{Buf as _, BufMut as _, Bytes};
use prost_reflect::{
    DeserializeOptions, DynamicMessage, Kind, MessageDescriptor, SerializeOptions,
};
use serde_json::{Map, Value};
use tonic::{
    Status,
    codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder},
};

use crate::{
    error::ApiError,
    routes::{Body, Route, field_path},
};

/// The request message of `route` for the path variables `bound`, the raw
/// query string and the body.
pub fn request_message(
    route: &Route,
    bound: Vec<(Vec<String>, String)>,
    query: Option<&str>,
    body: &[u8],
) -> Result<DynamicMessage, ApiError> {
    let input = route.rpc.input();
    let has_body = body.iter().any(|b| !b.is_ascii_whitespace());
    let mut json = Map::new();
    match &route.body {
        Body::None if has_body => {
            return Err(ApiError::new(
                tonic::Code::InvalidArgument,
                format!("{} {} takes no request body", route.method, route.pattern),
            ));
        }
        Body::None => {}
        Body::All if has_body => match parse_json(body)? {
            Value::Object(map) => json = map,
            _ => {
                return Err(ApiError::new(
                    tonic::Code::InvalidArgument,
                    "malformed JSON: the request body must be a JSON object",
                ));
            }
        },
        Body::All => {}
        Body::Field(name) if has_body => {
            json.insert(name.clone(), parse_json(body)?);
        }
        Body::Field(_) => {}
    }
    for (name, value) in query_pairs(query.unwrap_or(""))? {
        let path: Vec<String> = name.split('.').map(str::to_owned).collect();
        let in_body = match &route.body {
            Body::All => true,
            Body::Field(f) => field_path(&input, &path[..1]).is_ok_and(|d| d.name() == f),
            Body::None => false,
        };
        if in_body {
            return Err(ApiError::invalid_field(
                &name,
                "unknown query parameter: this route takes its fields in the request body",
            ));
        }
        let field = field_path(&input, &path)
            .map_err(|_| ApiError::invalid_field(&name, "unknown query parameter"))?;
        // Name the parameter here: the JSON reader would only say "unrecognized
        // enum value".
        if let Kind::Enum(e) = field.kind()
            && value.parse::<i32>().is_err()
            && e.get_value_by_name(&value).is_none()
        {
            let names: Vec<String> = e.values().map(|v| v.name().to_owned()).collect();
            return Err(ApiError::invalid_field(
                &name,
                format!("unknown value `{value}` (one of: {})", names.join(", ")),
            ));
        }
        insert(
            &mut json,
            &input,
            &path,
            scalar(&field.kind(), &value),
            field.is_list(),
        )
        .map_err(|e| ApiError::invalid_field(&name, e))?;
    }
    // Path variables win over the same field in the body.
    for (path, value) in bound {
        let field =
            field_path(&input, &path).map_err(|e| ApiError::invalid_field(&path.join("."), e))?;
        insert(
            &mut json,
            &input,
            &path,
            scalar(&field.kind(), &value),
            false,
        )
        .map_err(|e| ApiError::invalid_field(&path.join("."), e))?;
    }
    DynamicMessage::deserialize_with_options(
        input,
        Value::Object(json),
        &DeserializeOptions::new().deny_unknown_fields(true),
    )
    .map_err(|e| json_error(&e.to_string()))
}

/// The answer message as canonical proto3 JSON.
pub fn response_json(output: MessageDescriptor, bytes: Bytes) -> Result<Vec<u8>, ApiError> {
    let message = DynamicMessage::decode(output, bytes).map_err(|e| {
        tracing::error!(error = %e, "a service answered with a message that does not decode");
        ApiError::new(tonic::Code::Internal, "internal error")
    })?;
    let mut out = serde_json::Serializer::new(Vec::new());
    message
        .serialize_with_options(&mut out, &SerializeOptions::new())
        .map_err(|e| {
            tracing::error!(error = %e, "an answer does not serialize to JSON");
            ApiError::new(tonic::Code::Internal, "internal error")
        })?;
    Ok(out.into_inner())
}

/// The encoded request message.
pub fn encode(message: &DynamicMessage) -> Bytes {
    Bytes::from(message.encode_to_vec())
}

fn parse_json(body: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::new(tonic::Code::InvalidArgument, format!("malformed JSON: {e}")))
}

/// A proto3 JSON error as a 400; an unknown field is named as a violation.
fn json_error(message: &str) -> ApiError {
    if let Some(rest) = message.strip_prefix("unrecognized field name '")
        && let Some(name) = rest.split('\'').next()
    {
        return ApiError::invalid_field(name, "unknown field");
    }
    ApiError::new(
        tonic::Code::InvalidArgument,
        format!("invalid request: {message}"),
    )
}

/// A path or query value as the JSON value proto3 JSON expects for `kind`:
/// numbers and other scalars may come as strings, booleans and enum numbers
/// may not.
fn scalar(kind: &Kind, value: &str) -> Value {
    match kind {
        Kind::Bool => match value {
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            other => Value::String(other.to_owned()),
        },
        Kind::Enum(_) => value
            .parse::<i64>()
            .map(Value::from)
            .unwrap_or_else(|_| Value::String(value.to_owned())),
        _ => Value::String(value.to_owned()),
    }
}

/// Sets the field at `path` in `json` (whatever name the client used for it
/// is replaced), appending for a repeated field.
fn insert(
    json: &mut Map<String, Value>,
    message: &MessageDescriptor,
    path: &[String],
    value: Value,
    list: bool,
) -> Result<(), String> {
    let (first, rest) = path.split_first().ok_or("empty field path")?;
    let field = field_path(message, std::slice::from_ref(first))?;
    let names = [field.name().to_owned(), field.json_name().to_owned()];
    let existing = names.iter().find(|n| json.contains_key(*n)).cloned();
    if rest.is_empty() {
        if list {
            let key = existing.unwrap_or_else(|| field.name().to_owned());
            match json.entry(key).or_insert_with(|| Value::Array(Vec::new())) {
                Value::Array(items) => items.push(value),
                _ => return Err("is given twice".into()),
            }
        } else {
            for n in &names {
                json.remove(n);
            }
            json.insert(field.name().to_owned(), value);
        }
        return Ok(());
    }
    let Kind::Message(inner) = field.kind() else {
        return Err(format!("`{first}` is not a message"));
    };
    let key = existing.unwrap_or_else(|| field.name().to_owned());
    match json.entry(key).or_insert_with(|| Value::Object(Map::new())) {
        Value::Object(map) => insert(map, &inner, rest, value, list),
        _ => Err(format!("`{first}` must be an object")),
    }
}

/// The query string's `name=value` pairs, percent-decoded (`+` is a space).
fn query_pairs(query: &str) -> Result<Vec<(String, String)>, ApiError> {
    let decode = |s: &str| {
        crate::routes::percent_decode(&s.replace('+', " ")).ok_or_else(|| {
            ApiError::new(
                tonic::Code::InvalidArgument,
                format!("malformed query string near `{s}`"),
            )
        })
    };
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            Ok((decode(k)?, decode(v)?))
        })
        .collect()
}

/// A codec that sends and receives encoded messages as they are: the edge
/// encodes and decodes with the descriptors itself.
#[derive(Debug, Clone, Copy, Default)]
pub struct RawCodec;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

#[cfg(test)]
mod tests {
    use http::Method;
    use prost_reflect::{DescriptorPool, Value as PValue};

    use super::*;
    use crate::routes::{Found, RouteTable};

    fn build(method: Method, uri: &str, body: &str) -> Result<DynamicMessage, ApiError> {
        let pool = DescriptorPool::decode(emporium_proto::FILE_DESCRIPTOR_SET).unwrap();
        let table = RouteTable::from_pool(&pool).unwrap();
        let (path, query) = uri
            .split_once('?')
            .map_or((uri, None), |(p, q)| (p, Some(q)));
        let Found::Route(route, bound) = table.find(&method, path) else {
            panic!("no route for {uri}")
        };
        request_message(route, bound, query, body.as_bytes())
    }

    #[test]
    fn path_query_and_body_fill_the_request() {
        let m = build(
            Method::GET,
            "/v1/orders?pageSize=5&status=ORDER_STATUS_CONFIRMED&page_token=x",
            "",
        )
        .unwrap();
        assert_eq!(
            m.get_field_by_name("page_size").unwrap().as_ref(),
            &PValue::I32(5)
        );
        assert_eq!(
            m.get_field_by_name("page_token").unwrap().as_str(),
            Some("x")
        );
        let m = build(
            Method::POST,
            "/v1/orders/abc:cancel",
            r#"{"reason":"changed my mind","orderId":"other"}"#,
        )
        .unwrap();
        assert_eq!(
            m.get_field_by_name("order_id").unwrap().as_str(),
            Some("abc")
        );
        assert_eq!(
            m.get_field_by_name("reason").unwrap().as_str(),
            Some("changed my mind")
        );
        let m = build(
            Method::POST,
            "/v1/orders",
            r#"{"items":[{"sku":"A","quantity":2}],"payment_method":"pm_card_ok","idempotencyKey":"k"}"#,
        )
        .unwrap();
        assert_eq!(
            m.get_field_by_name("payment_method").unwrap().as_str(),
            Some("pm_card_ok")
        );
        let m = build(
            Method::POST,
            "/v1/products/p1:adjustStock",
            r#"{"delta":"5"}"#,
        )
        .unwrap();
        assert_eq!(
            m.get_field_by_name("product_id").unwrap().as_str(),
            Some("p1")
        );
    }

    #[test]
    fn unknown_fields_and_bad_json_are_refused_by_name() {
        let e = build(
            Method::POST,
            "/v1/users",
            r#"{"email":"a@b.c","admin":true}"#,
        )
        .unwrap_err();
        assert_eq!(e.http, http::StatusCode::BAD_REQUEST);
        assert_eq!(
            e.body()["error"]["details"][0]["fieldViolations"][0]["field"],
            "admin"
        );
        let e = build(Method::GET, "/v1/products?colour=red", "").unwrap_err();
        assert_eq!(
            e.body()["error"]["details"][0]["fieldViolations"][0]["field"],
            "colour"
        );
        let e = build(Method::GET, "/v1/orders?status=NOPE", "").unwrap_err();
        let violation = &e.body()["error"]["details"][0]["fieldViolations"][0];
        assert_eq!(violation["field"], "status");
        assert!(
            violation["description"]
                .as_str()
                .unwrap()
                .contains("ORDER_STATUS_CONFIRMED"),
            "{violation}"
        );
        // By number is canonical proto3 JSON too.
        build(Method::GET, "/v1/orders?status=2", "").unwrap();
        let e = build(Method::POST, "/v1/users", r#"{"email": "#).unwrap_err();
        assert!(e.message.starts_with("malformed JSON"), "{}", e.message);
        let e = build(Method::POST, "/v1/users", "[1]").unwrap_err();
        assert!(e.message.starts_with("malformed JSON"), "{}", e.message);
        let e = build(Method::GET, "/v1/products", "{}").unwrap_err();
        assert!(e.message.contains("takes no request body"), "{}", e.message);
    }
}
