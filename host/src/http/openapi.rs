//! The OpenAPI 3.1 document served at `/api/openapi.json`: operations come
//! from each handler's `#[utoipa::path]` (collected as the routes are
//! registered), schemas from the types in `schema` and the handlers, and the
//! parts that depend on configuration — the entity types, their reference and
//! blob fields — are filled in from the `Config` the server runs with.

use serde_json::{Value, json};
use utoipa::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};

use super::schema::Problem;
use crate::config::Config;

/// The rendered document (cheap to clone: shared bytes).
#[derive(Clone)]
pub struct Document(pub bytes::Bytes);

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Accord sync API",
        version = "1.0.0",
        description = "Push, pull, conflicts, blobs and live change notices for offline-first apps. Every error is an RFC 9457 problem document (application/problem+json). See docs/api.md for the full semantics.",
        license(name = "Apache-2.0", identifier = "Apache-2.0")
    ),
    security(("bearer" = [])),
    components(schemas(Problem), responses(Problem)),
    modifiers(&Bearer)
)]
pub struct ApiDoc;

struct Bearer;

impl utoipa::Modify for Bearer {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let scheme = HttpBuilder::new()
            .scheme(HttpAuthScheme::Bearer)
            .description(Some("An API key `ka_…` or a JWT (when `[auth.jwt]` is configured)"))
            .build();
        components.add_security_scheme("bearer", SecurityScheme::Http(scheme));
    }
}

/// Renders `api` (as collected from the routes) for the entity types of `config`.
pub fn render(api: &utoipa::openapi::OpenApi, config: &Config) -> Document {
    let mut doc = serde_json::to_value(api).unwrap_or(Value::Null);
    tailor(&mut doc, config);
    Document(bytes::Bytes::from(doc.to_string()))
}

/// Names the configured entity types where the generic document has a free-form map.
fn tailor(doc: &mut Value, config: &Config) {
    let types: Vec<&String> = config.entities.keys().collect();
    let schemas = &mut doc["components"]["schemas"];
    let mut changes = serde_json::Map::new();
    for name in &types {
        let ty = &config.entities[*name];
        let record_name = format!("IncomingRecord.{name}");
        let mut record = schemas["IncomingRecord"].clone();
        let data = &mut record["properties"]["data"];
        let mut fields = serde_json::Map::new();
        for (field, target) in &ty.refs {
            let about = format!("A reference: the id of a `{target}` record, or null");
            fields.insert(field.clone(), json!({"type": ["string", "null"], "description": about}));
        }
        for field in &ty.blobs {
            fields.insert(
                field.clone(),
                json!({"oneOf": [{"type": "string", "pattern": "^[0-9a-f]{64}$"}, {"type": "null"}], "description": "A blob's SHA-256: upload it first"}),
            );
        }
        if !fields.is_empty() {
            data["properties"] = Value::Object(fields);
        }
        // `data` may be left out only by a delete.
        record["anyOf"] = json!([
            {"required": ["data"]},
            {"required": ["deleted"], "properties": {"deleted": {"const": true}}}
        ]);
        schemas[&record_name] = record;
        changes.insert(
            name.to_string(),
            json!({"type": "array", "items": {"$ref": format!("#/components/schemas/{record_name}")}}),
        );
    }
    let push = &mut schemas["PushRequest"]["properties"]["changes"];
    push["properties"] = Value::Object(changes);
    push["additionalProperties"] = json!(false);
    push["description"] = json!(format!("Entity type → records; the types are {}", list(&types)));
    let entity = json!({"type": "string", "enum": types});
    set_param(doc, "/api/sync/conflicts", "get", "entity", entity.clone());
    set_param(doc, "/api/admin/policies/replay", "post", "entity", entity);
    let alternatives = types.iter().map(|t| regex_escape(t)).collect::<Vec<_>>().join("|");
    let types_param = json!({"type": "string", "pattern": format!("^(({alternatives})(,({alternatives}))*)?$")});
    set_param(doc, "/api/sync/pull", "get", "types", types_param);
}

fn set_param(doc: &mut Value, path: &str, method: &str, name: &str, schema: Value) {
    if let Some(params) = doc["paths"][path][method]["parameters"].as_array_mut() {
        for p in params.iter_mut().filter(|p| p["name"] == name) {
            p["schema"] = schema.clone();
        }
    }
}

fn list(types: &[&String]) -> String {
    types.iter().map(|t| format!("`{t}`")).collect::<Vec<_>>().join(", ")
}

fn regex_escape(s: &str) -> String {
    s.chars().fold(String::new(), |mut out, c| {
        if !c.is_ascii_alphanumeric() && c != '_' {
            out.push('\\');
        }
        out.push(c);
        out
    })
}
