//! The served OpenAPI document: poem-openapi's, completed with what the server does and the
//! generator cannot say, so that a client (or schemathesis) reading it is told the truth:
//!
//! - request objects refuse unknown properties (every request type denies unknown fields):
//!   `additionalProperties: false` on every object a request body reaches;
//! - an optional property may be `null` (the server accepts and sends `null` for an absent
//!   value): `nullable: true`;
//! - integers have the bounds of their format (`uint32`: `minimum: 0`, `maximum: 4294967295`).
//!
//! It also lists the methods of every path, for the `Allow` header of a `405`.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value, json};

/// A bound the server's configuration sets on a property, stated in the document: `keyword`
/// (`maximum`, say) of `property` of the component schema `schema`.
#[derive(Debug, Clone)]
pub struct Stated {
    pub schema: &'static str,
    pub property: &'static str,
    pub keyword: &'static str,
    pub value: Value,
}

/// What the configuration bounds and the generator cannot know.
pub fn configured_bounds(config: &hivesync_core::config::Config) -> Vec<Stated> {
    vec![Stated {
        schema: "ManifestFileView",
        property: "size",
        keyword: "maximum",
        value: json!(config.sync.max_file_bytes),
    }]
}

/// The completed document.
pub fn conformed(spec: &str, bounds: &[Stated]) -> String {
    let Ok(mut spec) = serde_json::from_str::<Value>(spec) else {
        return spec.to_owned();
    };
    for bound in bounds {
        let pointer = format!(
            "/components/schemas/{}/properties/{}",
            bound.schema, bound.property
        );
        if let Some(property) = spec.pointer_mut(&pointer).and_then(Value::as_object_mut) {
            property.insert(bound.keyword.to_owned(), bound.value.clone());
        }
    }
    let request_roots = roots(&spec, "requestBody");
    let closed = reachable(&spec, request_roots);
    if let Some(schemas) = spec
        .pointer_mut("/components/schemas")
        .and_then(Value::as_object_mut)
    {
        for (name, schema) in schemas.iter_mut() {
            if closed.contains(name)
                && schema.get("type") == Some(&json!("object"))
                && schema.get("additionalProperties").is_none()
            {
                schema["additionalProperties"] = json!(false);
            }
            mark_optional_nullable(schema);
        }
    }
    walk(&mut spec, &mut |schema| {
        let unsigned = matches!(
            schema.get("format").and_then(Value::as_str),
            Some("uint8" | "uint16" | "uint32" | "uint64")
        );
        if unsigned && schema.get("minimum").is_none() {
            schema.insert("minimum".to_owned(), json!(0));
        }
        let largest = match schema.get("format").and_then(Value::as_str) {
            Some("uint8") => Some(json!(u8::MAX)),
            Some("uint16") => Some(json!(u16::MAX)),
            Some("uint32") => Some(json!(u32::MAX)),
            Some("uint64") => Some(json!(u64::MAX)),
            Some("int32") => Some(json!(i32::MAX)),
            Some("int64") => Some(json!(i64::MAX)),
            _ => None,
        };
        if let Some(largest) = largest
            && schema.get("maximum").is_none()
        {
            schema.insert("maximum".to_owned(), largest);
        }
    });
    serde_json::to_string(&spec).unwrap_or_default()
}

/// The schema names referenced by each operation's `part` (`requestBody`).
fn roots(spec: &Value, part: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let operations = spec
        .get("paths")
        .and_then(Value::as_object)
        .into_iter()
        .flat_map(|paths| paths.values())
        .filter_map(Value::as_object)
        .flat_map(|methods| methods.values());
    for operation in operations {
        if let Some(body) = operation.get(part) {
            collect_refs(body, &mut found);
        }
    }
    found
}

/// Every schema name reachable from `roots` through `$ref`s.
fn reachable(spec: &Value, roots: BTreeSet<String>) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut pending: Vec<String> = roots.into_iter().collect();
    while let Some(name) = pending.pop() {
        if !seen.insert(name.clone()) {
            continue;
        }
        if let Some(schema) = spec.pointer(&format!("/components/schemas/{name}")) {
            let mut refs = BTreeSet::new();
            collect_refs(schema, &mut refs);
            pending.extend(refs.into_iter().filter(|r| !seen.contains(r)));
        }
    }
    seen
}

fn collect_refs(value: &Value, found: &mut BTreeSet<String>) {
    match value {
        Value::Object(map) => {
            if let Some(name) = map
                .get("$ref")
                .and_then(Value::as_str)
                .and_then(|r| r.strip_prefix("#/components/schemas/"))
            {
                found.insert(name.to_owned());
            }
            map.values().for_each(|v| collect_refs(v, found));
        }
        Value::Array(items) => items.iter().for_each(|v| collect_refs(v, found)),
        _ => {}
    }
}

/// `nullable: true` on the properties of `schema` that are not required (a `$ref` is wrapped in
/// `allOf`, since OpenAPI 3.0 ignores siblings of `$ref`).
fn mark_optional_nullable(schema: &mut Value) {
    let required: BTreeSet<String> = schema
        .get("required")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(str::to_owned)
        .collect();
    let Some(properties) = schema.get_mut("properties").and_then(Value::as_object_mut) else {
        return;
    };
    for (name, property) in properties.iter_mut() {
        if required.contains(name) {
            continue;
        }
        if let Some(reference) = property.get("$ref").cloned() {
            let mut wrapped = Map::new();
            wrapped.insert("allOf".to_owned(), json!([{ "$ref": reference }]));
            wrapped.insert("nullable".to_owned(), json!(true));
            if let Some(description) = property.get("description") {
                wrapped.insert("description".to_owned(), description.clone());
            }
            *property = Value::Object(wrapped);
        } else if let Some(object) = property.as_object_mut() {
            object.insert("nullable".to_owned(), json!(true));
        }
    }
}

/// Calls `visit` on every object in `value` that looks like a schema (has `type` or `format`).
fn walk(value: &mut Value, visit: &mut impl FnMut(&mut Map<String, Value>)) {
    match value {
        Value::Object(map) => {
            if map.contains_key("type") || map.contains_key("format") {
                visit(map);
            }
            map.values_mut().for_each(|v| walk(v, visit));
        }
        Value::Array(items) => items.iter_mut().for_each(|v| walk(v, visit)),
        _ => {}
    }
}

/// The methods of each path of the document, as templates (`/projects/{id}`) to match request
/// paths against.
#[derive(Debug, Clone, Default)]
pub struct Methods {
    paths: Vec<(Vec<String>, BTreeSet<String>)>,
}

impl Methods {
    /// The paths of `spec` (relative to `prefix`, e.g. `/api/v1`), plus `extra` (path template,
    /// methods) for routes outside it.
    pub fn of(spec: &str, prefix: &str, extra: &[(&str, &[&str])]) -> Methods {
        let spec: Value = serde_json::from_str(spec).unwrap_or_default();
        let mut table: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        if let Some(paths) = spec.get("paths").and_then(Value::as_object) {
            for (path, methods) in paths {
                let methods = methods.as_object().into_iter().flat_map(|m| m.keys());
                table
                    .entry(format!("{prefix}{path}"))
                    .or_default()
                    .extend(methods.map(|m| m.to_ascii_uppercase()));
            }
        }
        for (path, methods) in extra {
            table
                .entry((*path).to_owned())
                .or_default()
                .extend(methods.iter().map(|m| m.to_string()));
        }
        Methods {
            paths: table
                .into_iter()
                .map(|(path, mut methods)| {
                    if methods.contains("GET") {
                        methods.insert("HEAD".to_owned());
                    }
                    (split(&path), methods)
                })
                .collect(),
        }
    }

    /// The `Allow` value for `path`: its methods, when a template matches it.
    pub fn allow(&self, path: &str) -> Option<String> {
        let segments = split(path);
        self.paths
            .iter()
            .find(|(template, _)| matches(template, &segments))
            .map(|(_, methods)| methods.iter().cloned().collect::<Vec<_>>().join(", "))
    }
}

fn split(path: &str) -> Vec<String> {
    path.trim_end_matches('/')
        .split('/')
        .map(str::to_owned)
        .collect()
}

/// A `{name}` segment matches any one segment; a last `{*name}` matches the rest.
fn matches(template: &[String], path: &[String]) -> bool {
    if let Some(last) = template.last()
        && last.starts_with("{*")
    {
        let fixed = &template[..template.len() - 1];
        return path.len() > fixed.len() && matches(fixed, &path[..fixed.len()]);
    }
    template.len() == path.len()
        && template
            .iter()
            .zip(path)
            .all(|(t, p)| t == p || (t.starts_with('{') && !p.is_empty()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_objects_are_closed_optional_properties_nullable_unsigned_minimum_zero() {
        let spec = json!({
            "paths": {"/a": {"post": {
                "requestBody": {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/In"}}}},
                "parameters": [{"name": "limit", "schema": {"type": "integer", "format": "uint32"}}],
                "responses": {"200": {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Out"}}}}}
            }}},
            "components": {"schemas": {
                "In": {"type": "object", "required": ["a"], "properties": {"a": {"type": "string"}, "n": {"$ref": "#/components/schemas/Nested"}}},
                "Nested": {"type": "object", "properties": {"b": {"type": "integer", "format": "uint64"}}},
                "Out": {"type": "object", "required": ["x"], "properties": {"x": {"type": "string"}, "next": {"type": "string"}}}
            }}
        });
        let bounds = [Stated {
            schema: "Nested",
            property: "b",
            keyword: "maximum",
            value: json!(7),
        }];
        let out: Value = serde_json::from_str(&conformed(&spec.to_string(), &bounds)).unwrap();
        let schemas = &out["components"]["schemas"];
        assert_eq!(schemas["In"]["additionalProperties"], false);
        assert_eq!(schemas["Nested"]["additionalProperties"], false);
        assert!(schemas["Out"].get("additionalProperties").is_none());
        assert!(schemas["In"]["properties"]["a"].get("nullable").is_none());
        assert_eq!(schemas["In"]["properties"]["n"]["nullable"], true);
        assert_eq!(
            schemas["In"]["properties"]["n"]["allOf"][0]["$ref"],
            "#/components/schemas/Nested"
        );
        assert_eq!(schemas["Out"]["properties"]["next"]["nullable"], true);
        assert_eq!(schemas["Nested"]["properties"]["b"]["minimum"], 0);
        assert_eq!(schemas["Nested"]["properties"]["b"]["maximum"], 7);
        assert_eq!(
            out["paths"]["/a"]["post"]["parameters"][0]["schema"]["minimum"],
            0
        );
    }

    #[test]
    fn allowed_methods_follow_the_templates() {
        let spec = json!({"paths": {
            "/projects": {"get": {}, "post": {}},
            "/projects/{id}": {"get": {}, "patch": {}, "delete": {}},
        }})
        .to_string();
        let methods = Methods::of(
            &spec,
            "/api/v1",
            &[("/api/v1/projects/{id}/files/{*path}", &["GET"])],
        );
        assert_eq!(
            methods.allow("/api/v1/projects").unwrap(),
            "GET, HEAD, POST"
        );
        assert_eq!(
            methods.allow("/api/v1/projects/abc").unwrap(),
            "DELETE, GET, HEAD, PATCH"
        );
        assert_eq!(
            methods.allow("/api/v1/projects/abc/files/a/b.js").unwrap(),
            "GET, HEAD"
        );
        assert_eq!(methods.allow("/api/v1/projects/abc/files"), None);
        assert_eq!(methods.allow("/elsewhere"), None);
    }
}
