//! The OpenAPI 3 document of the REST routes, written from the same route
//! table and descriptors the transcoder uses, so it cannot drift from what is
//! served. Schemas follow the proto3 JSON mapping (lowerCamelCase names,
//! 64-bit integers as strings, enums by name, Timestamps as RFC 3339), and
//! descriptions are the contracts' comments.

use std::collections::BTreeMap;

use prost_reflect::{EnumDescriptor, FieldDescriptor, FileDescriptor, Kind, MessageDescriptor};
use serde_json::{Map, Value, json};

use crate::routes::{Body, Route, RouteTable, Segment};

/// The document for `table`.
pub fn document(table: &RouteTable, version: &str) -> Value {
    let mut schemas = BTreeMap::new();
    let mut paths: BTreeMap<String, Map<String, Value>> = BTreeMap::new();
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for route in table.routes() {
        let path = openapi_path(route);
        let mut op = operation(route, &mut schemas);
        // Operation ids are unique: a method's further bindings are numbered.
        let id = format!("{}_{}", route.rpc.parent_service().name(), route.rpc.name());
        let n = seen.entry(id.clone()).or_default();
        *n += 1;
        op["operationId"] = Value::String(if *n == 1 { id } else { format!("{id}{n}") });
        paths
            .entry(path)
            .or_default()
            .insert(route.method.as_str().to_ascii_lowercase(), op);
    }
    schemas.insert("Error".to_owned(), error_schema());
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "Emporium API",
            "version": version,
            "description": "REST/JSON of Emporium's public RPCs, transcoded by the edge from the \
                google.api.http annotations in the contracts. Field names are proto3 JSON's \
                lowerCamelCase (proto names are accepted on input); unknown fields are refused. \
                Server streams (`:watch`) are Server-Sent Events, or WebSocket on upgrade; \
                they also take the token as the `access_token` query parameter.",
        },
        "servers": [{"url": "/"}],
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
            },
            "responses": {
                "Error": {
                    "description": "An error: the gRPC status as JSON (google.rpc.Status).",
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
                },
            },
        },
        "security": [{"bearer": []}, {}],
        "paths": paths,
    })
}

/// `/v1/orders/{order_id}:cancel` as OpenAPI writes it (the same text).
fn openapi_path(route: &Route) -> String {
    let mut path = String::new();
    for seg in &route.template.segments {
        path.push('/');
        match seg {
            Segment::Literal(l) => path.push_str(l),
            Segment::Any => path.push_str("{_}"),
            Segment::Field(f) => {
                path.push('{');
                path.push_str(&f.join("."));
                path.push('}');
            }
        }
    }
    if let Some(verb) = &route.template.verb {
        path.push(':');
        path.push_str(verb);
    }
    path
}

fn operation(route: &Route, schemas: &mut BTreeMap<String, Value>) -> Value {
    let rpc = &route.rpc;
    let input = rpc.input();
    let streaming = rpc.is_server_streaming();
    let mut parameters = Vec::new();
    let bound: Vec<String> = route.template.fields().map(|f| f.join(".")).collect();
    for name in &bound {
        let field = crate::routes::field_path(
            &input,
            &name.split('.').map(str::to_owned).collect::<Vec<_>>(),
        );
        parameters.push(json!({
            "name": name,
            "in": "path",
            "required": true,
            "schema": field.as_ref().map(scalar_schema).unwrap_or_else(|_| json!({"type": "string"})),
            "description": field.as_ref().map(field_comment).unwrap_or_default(),
        }));
    }
    if route.body == Body::None {
        for (name, field) in query_fields(&input, "", &bound, 0) {
            let mut schema = scalar_schema(&field);
            if field.is_list() {
                schema = json!({"type": "array", "items": schema});
            }
            parameters.push(json!({
                "name": name,
                "in": "query",
                "required": false,
                "schema": schema,
                "description": field_comment(&field),
            }));
        }
    }
    if streaming {
        parameters.push(json!({
            "name": "access_token",
            "in": "query",
            "required": false,
            "schema": {"type": "string"},
            "description": "The bearer token, for clients that cannot set Authorization \
                (EventSource, WebSocket in browsers).",
        }));
    }
    let output = message_ref(&rpc.output(), schemas);
    let ok = if streaming {
        json!({
            "description": "A stream of messages: Server-Sent Events (`event: update` with the \
                message as data, `event: end`, `event: error` with the error body), or, on \
                `Upgrade: websocket`, one text frame per message.",
            "content": {"text/event-stream": {"schema": {"type": "string"}, "x-message": output}},
        })
    } else {
        json!({
            "description": "OK",
            "content": {"application/json": {"schema": output}},
        })
    };
    let mut op = json!({
        "tags": [rpc.parent_service().name()],
        "summary": comment(&rpc.parent_file(), rpc.path()).lines().next().unwrap_or_default(),
        "description": comment(&rpc.parent_file(), rpc.path()),
        "parameters": parameters,
        "responses": {
            "200": ok,
            "default": {"$ref": "#/components/responses/Error"},
        },
    });
    let body_schema = match &route.body {
        Body::None => None,
        Body::All => Some(message_ref(&input, schemas)),
        Body::Field(name) => input
            .get_field_by_name(name)
            .map(|f| field_schema(&f, schemas)),
    };
    if let Some(schema) = body_schema {
        op["requestBody"] = json!({
            "required": true,
            "content": {"application/json": {"schema": schema}},
        });
    }
    op
}

/// The fields a GET takes from the query string: scalars and repeated
/// scalars, nested messages by dotted path (two levels deep), less the
/// path's.
fn query_fields(
    message: &MessageDescriptor,
    prefix: &str,
    bound: &[String],
    depth: usize,
) -> Vec<(String, FieldDescriptor)> {
    let mut out = Vec::new();
    for field in message.fields() {
        let name = format!("{prefix}{}", field.json_name());
        let proto_name = format!("{prefix}{}", field.name());
        if bound.contains(&proto_name) || bound.contains(&name) || field.is_map() {
            continue;
        }
        match field.kind() {
            Kind::Message(m) if is_well_known_scalar(&m) => out.push((name, field)),
            Kind::Message(m) if !field.is_list() && depth < 2 => {
                out.extend(query_fields(&m, &format!("{name}."), bound, depth + 1));
            }
            Kind::Message(_) => {}
            _ => out.push((name, field)),
        }
    }
    out
}

fn is_well_known_scalar(m: &MessageDescriptor) -> bool {
    matches!(
        m.full_name(),
        "google.protobuf.Timestamp"
            | "google.protobuf.Duration"
            | "google.protobuf.FieldMask"
            | "google.protobuf.StringValue"
            | "google.protobuf.Int32Value"
            | "google.protobuf.Int64Value"
            | "google.protobuf.UInt32Value"
            | "google.protobuf.UInt64Value"
            | "google.protobuf.BoolValue"
            | "google.protobuf.DoubleValue"
            | "google.protobuf.FloatValue"
    )
}

/// A field's schema with its repetition.
fn field_schema(field: &FieldDescriptor, schemas: &mut BTreeMap<String, Value>) -> Value {
    let one = match field.kind() {
        Kind::Message(m) if field.is_map() => {
            let value = m.map_entry_value_field();
            return json!({"type": "object", "additionalProperties": field_schema(&value, schemas)});
        }
        Kind::Message(m) => message_ref(&m, schemas),
        Kind::Enum(e) => enum_ref(&e, schemas),
        _ => scalar_schema(field),
    };
    if field.is_list() {
        json!({"type": "array", "items": one})
    } else {
        one
    }
}

/// The JSON schema of a scalar (or scalar-like well-known) field.
fn scalar_schema(field: &FieldDescriptor) -> Value {
    match field.kind() {
        Kind::Double | Kind::Float => json!({"type": "number"}),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => {
            json!({"type": "integer", "format": "int32"})
        }
        Kind::Uint32 | Kind::Fixed32 => json!({"type": "integer", "format": "int32", "minimum": 0}),
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => json!({"type": "string", "format": "int64"}),
        Kind::Uint64 | Kind::Fixed64 => json!({"type": "string", "format": "uint64"}),
        Kind::Bool => json!({"type": "boolean"}),
        Kind::String => json!({"type": "string"}),
        Kind::Bytes => json!({"type": "string", "format": "byte"}),
        Kind::Enum(e) => {
            json!({"type": "string", "enum": e.values().map(|v| v.name().to_owned()).collect::<Vec<_>>()})
        }
        Kind::Message(m) => well_known(&m).unwrap_or_else(|| json!({"type": "object"})),
    }
}

fn well_known(m: &MessageDescriptor) -> Option<Value> {
    Some(match m.full_name() {
        "google.protobuf.Timestamp" => json!({"type": "string", "format": "date-time"}),
        "google.protobuf.Duration" => json!({"type": "string", "example": "1.5s"}),
        "google.protobuf.FieldMask" => json!({"type": "string"}),
        "google.protobuf.Empty" => json!({"type": "object"}),
        "google.protobuf.Struct" => json!({"type": "object", "additionalProperties": true}),
        "google.protobuf.Value" => json!({}),
        "google.protobuf.StringValue" => json!({"type": "string", "nullable": true}),
        "google.protobuf.BoolValue" => json!({"type": "boolean", "nullable": true}),
        "google.protobuf.Int32Value" | "google.protobuf.UInt32Value" => {
            json!({"type": "integer", "nullable": true})
        }
        "google.protobuf.Int64Value" | "google.protobuf.UInt64Value" => {
            json!({"type": "string", "format": "int64", "nullable": true})
        }
        "google.protobuf.DoubleValue" | "google.protobuf.FloatValue" => {
            json!({"type": "number", "nullable": true})
        }
        _ => return None,
    })
}

/// A `$ref` to the message's schema, adding it (and what it uses) once.
fn message_ref(m: &MessageDescriptor, schemas: &mut BTreeMap<String, Value>) -> Value {
    if let Some(wk) = well_known(m) {
        return wk;
    }
    let name = m.full_name().to_owned();
    if !schemas.contains_key(&name) {
        // Placeholder first: messages may refer to themselves.
        schemas.insert(name.clone(), Value::Null);
        let mut properties = Map::new();
        for field in m.fields() {
            let mut schema = field_schema(&field, schemas);
            let doc = field_comment(&field);
            if !doc.is_empty() {
                // A `$ref` takes no siblings in OpenAPI 3.0: wrap it.
                if schema.get("$ref").is_some() {
                    schema = json!({"allOf": [schema]});
                }
                schema["description"] = Value::String(doc);
            }
            properties.insert(field.json_name().to_owned(), schema);
        }
        schemas.insert(
            name.clone(),
            json!({
                "type": "object",
                "description": comment(&m.parent_file(), m.path()),
                "properties": properties,
                "additionalProperties": false,
            }),
        );
    }
    json!({"$ref": format!("#/components/schemas/{name}")})
}

fn enum_ref(e: &EnumDescriptor, schemas: &mut BTreeMap<String, Value>) -> Value {
    let name = e.full_name().to_owned();
    schemas.entry(name.clone()).or_insert_with(|| {
        json!({
            "type": "string",
            "description": comment(&e.parent_file(), e.path()),
            "enum": e.values().map(|v| v.name().to_owned()).collect::<Vec<_>>(),
        })
    });
    json!({"$ref": format!("#/components/schemas/{name}")})
}

fn error_schema() -> Value {
    json!({
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "status", "message", "details"],
                "properties": {
                    "code": {"type": "integer", "description": "The google.rpc.Code number."},
                    "status": {"type": "string", "description": "The google.rpc.Code name (INVALID_ARGUMENT, …)."},
                    "message": {"type": "string"},
                    "details": {
                        "type": "array",
                        "description": "google.rpc details with their `@type`: BadRequest (fieldViolations), RetryInfo, ErrorInfo.",
                        "items": {"type": "object", "additionalProperties": true},
                    },
                },
            },
        },
    })
}

fn field_comment(field: &FieldDescriptor) -> String {
    comment(&field.parent_file(), field.path())
}

/// The leading comment of the element at `path` in `file`, trimmed.
fn comment(file: &FileDescriptor, path: &[i32]) -> String {
    file.file_descriptor_proto()
        .source_code_info
        .as_ref()
        .and_then(|info| info.location.iter().find(|l| l.path == path))
        .and_then(|l| l.leading_comments.as_deref())
        .map(|c| {
            c.lines()
                .map(str::trim)
                .collect::<Vec<_>>()
                .join("\n")
                .trim()
                .to_owned()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use prost_reflect::DescriptorPool;

    use super::*;

    #[test]
    fn every_route_is_documented_with_its_parameters() {
        let pool = DescriptorPool::decode(emporium_proto::FILE_DESCRIPTOR_SET).unwrap();
        let table = RouteTable::from_pool(&pool).unwrap();
        let doc = document(&table, "test");
        let paths = doc["paths"].as_object().unwrap();
        for route in table.routes() {
            let op = &paths[&openapi_path(route)][route.method.as_str().to_ascii_lowercase()];
            let id = op["operationId"].as_str().unwrap();
            assert!(id.contains(route.rpc.name()), "{}: {id}", route.pattern);
        }
        let cancel = &paths["/v1/orders/{order_id}:cancel"]["post"];
        assert_eq!(cancel["parameters"][0]["name"], "order_id");
        assert_eq!(cancel["parameters"][0]["in"], "path");
        assert!(cancel["requestBody"].is_object());
        let list = &paths["/v1/products"]["get"];
        let names: Vec<&str> = list["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|p| p["name"].as_str())
            .collect();
        assert!(names.contains(&"pageSize"), "{names:?}");
        // Every $ref resolves.
        let text = doc.to_string();
        for r in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
            let name = &r[..r.find('"').unwrap()];
            assert!(
                doc["components"]["schemas"][name].is_object(),
                "{name} is missing"
            );
        }
        assert!(
            doc["components"]["schemas"]["emporium.order.v1.Order"]["properties"]["createTime"]
                .is_object()
        );
    }
}
