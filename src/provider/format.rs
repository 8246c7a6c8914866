//! What the three request builders share: the neutral `response_format`, JSON-schema
//! translation (Gemini's OpenAPI subset, Anthropic's structured-output subset), provider-scoped
//! extras, image sources, and the list of parameters a provider has no counterpart for.

use serde_json::{json, Map, Value};

/// Keys of `Params.extra` that hold provider-scoped extras, never sent as they are.
pub const SCOPES: [&str; 4] = ["openai", "openai_compatible", "anthropic", "gemini"];

/// Parameters a request builder could not translate for its provider, in the order met. The
/// client drops them (one log record per model and key) or refuses the call, per the model's
/// `unsupported_params`.
#[derive(Debug, Default, PartialEq)]
pub struct Unsupported(pub Vec<String>);

impl Unsupported {
    /// Note that `key` has no counterpart.
    pub fn push(&mut self, key: &str) {
        if !self.0.iter().any(|k| k == key) {
            self.0.push(key.to_string());
        }
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The response format a caller asked for, provider-neutral.
#[derive(Clone, Debug, PartialEq)]
pub enum ResponseFormat {
    Text,
    /// Any JSON object.
    JsonObject,
    /// JSON matching `schema`; `name`/`strict`/`description` as OpenAI takes them.
    JsonSchema {
        name: String,
        schema: Value,
        strict: Option<bool>,
        description: Option<String>,
    },
}

/// Read `response_format` as given by a caller: `"text"`, `"json"` / `"json_object"`,
/// `{"type": "text" | "json_object"}`, OpenAI's `{"type": "json_schema", "json_schema":
/// {name, schema, strict?, description?}}`, Anthropic's `{"type": "json_schema", "schema"}`, or
/// a plain JSON schema (any other object). Errors say what is wrong with it.
pub fn response_format(v: &Value) -> Result<ResponseFormat, String> {
    match v {
        Value::String(s) => match s.as_str() {
            "text" => Ok(ResponseFormat::Text),
            "json" | "json_object" => Ok(ResponseFormat::JsonObject),
            other => Err(format!("response_format {other:?} is not one of \"text\", \"json\", \"json_object\" (or a JSON schema object)")),
        },
        Value::Object(o) => match o.get("type").and_then(Value::as_str) {
            Some("text") if o.len() == 1 => Ok(ResponseFormat::Text),
            Some("json_object") if o.len() == 1 => Ok(ResponseFormat::JsonObject),
            Some("json_schema") => {
                if let Some(Value::Object(js)) = o.get("json_schema") {
                    let schema = js.get("schema").cloned().unwrap_or_else(|| json!({"type": "object"}));
                    if !schema.is_object() {
                        return Err("response_format.json_schema.schema must be an object".into());
                    }
                    let name = js.get("name").and_then(Value::as_str).map(str::to_string).unwrap_or_else(|| schema_name(&schema));
                    Ok(ResponseFormat::JsonSchema {
                        name,
                        schema,
                        strict: js.get("strict").and_then(Value::as_bool),
                        description: js.get("description").and_then(Value::as_str).map(str::to_string),
                    })
                } else if let Some(schema @ Value::Object(_)) = o.get("schema") {
                    Ok(ResponseFormat::JsonSchema { name: schema_name(schema), schema: schema.clone(), strict: None, description: None })
                } else {
                    Err("response_format of type \"json_schema\" needs a `json_schema` object (or a `schema` object)".into())
                }
            }
            // Anything else is a JSON schema itself (its `type` is then "object", "array", …).
            _ => Ok(ResponseFormat::JsonSchema { name: schema_name(v), schema: v.clone(), strict: None, description: None }),
        },
        other => Err(format!("response_format must be a string or an object, not {}", type_name(other))),
    }
}

/// The JSON type name of `v`, for messages.
pub fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A schema's name for OpenAI (`^[a-zA-Z0-9_-]{1,64}$`): its `title` made to fit, else
/// `"response"`.
fn schema_name(schema: &Value) -> String {
    let title = schema.get("title").and_then(Value::as_str).unwrap_or_default();
    let name: String = title.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' || c == '-' { c } else { '_' }).take(64).collect();
    if name.trim_matches('_').is_empty() {
        "response".into()
    } else {
        name
    }
}

/// The provider-scoped extras for a provider: the objects under each of `scopes` in `extra`,
/// in order. Scoped values that are not objects are reported as unsupported.
pub fn scoped<'a>(extra: &'a Map<String, Value>, scopes: &[&str], unsupported: &mut Unsupported) -> Vec<&'a Map<String, Value>> {
    let mut out = Vec::new();
    for s in scopes {
        match extra.get(*s) {
            Some(Value::Object(m)) => out.push(m),
            Some(_) => unsupported.push(s),
            None => {}
        }
    }
    out
}

/// `snake_case` → `lowerCamelCase` (Gemini field names).
pub fn camel(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    let mut up = false;
    for c in key.chars() {
        if c == '_' {
            up = true;
        } else if up {
            out.extend(c.to_uppercase());
            up = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// An image given as an OpenAI `image_url` part: a `data:` URL (media type, base64 data) or
/// another URL.
pub enum ImageSource<'a> {
    Inline { mime: &'a str, data: &'a str },
    Url(&'a str),
}

/// The image of an OpenAI content part `{"type": "image_url", "image_url": {"url"}}` (the
/// bare-string `image_url` form too), if the part is one.
pub fn image_of(part: &Value) -> Option<ImageSource<'_>> {
    if part.get("type").and_then(Value::as_str) != Some("image_url") {
        return None;
    }
    let u = part.get("image_url")?;
    let url = u.get("url").unwrap_or(u).as_str()?;
    Some(match url.strip_prefix("data:") {
        Some(rest) => {
            let (mime, data) = rest.split_once(";base64,").unwrap_or(("image/png", rest));
            ImageSource::Inline { mime, data }
        }
        None => ImageSource::Url(url),
    })
}

/// The media type an image URL's file extension implies, if it names a common one.
pub fn mime_from_url(url: &str) -> Option<&'static str> {
    let path = url.split(['?', '#']).next().unwrap_or(url).to_ascii_lowercase();
    let ext = path.rsplit_once('.').map(|(_, e)| e)?;
    Some(match ext {
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "webp" => "image/webp",
        "gif" => "image/gif",
        "heic" => "image/heic",
        "heif" => "image/heif",
        "pdf" => "application/pdf",
        _ => return None,
    })
}

// ---------------------------------------------------------------------------------------------
// JSON schema → Gemini's OpenAPI subset

/// Keys of Gemini's `Schema` (an OpenAPI 3.0 subset) that the Gemini API accepts.
const GEMINI_SCHEMA_KEYS: [&str; 21] = [
    "type",
    "format",
    "title",
    "description",
    "nullable",
    "enum",
    "maxItems",
    "minItems",
    "properties",
    "required",
    "minProperties",
    "maxProperties",
    "minLength",
    "maxLength",
    "pattern",
    "example",
    "anyOf",
    "propertyOrdering",
    "default",
    "items",
    "minimum",
];

/// How deep `$ref`s are followed before giving up on a (recursive) schema.
const MAX_REF_DEPTH: usize = 32;
/// How many `$ref`s one conversion inlines in all: a schema whose definitions refer to each
/// other several times over would otherwise grow exponentially.
const MAX_REF_EXPANSIONS: usize = 256;

/// A JSON schema (as OpenAI and Anthropic take it) in the OpenAPI subset Gemini's
/// `responseSchema` and function `parameters` accept: `$ref`s into `$defs`/`definitions` are
/// inlined (recursion beyond a depth becomes an untyped object), `type: [T, "null"]` and
/// `anyOf` with a null branch become `nullable`, `const` becomes a one-value `enum`, enum
/// values become strings, types are upper-case, and keywords Gemini has no field for
/// (`additionalProperties`, `$schema`, `oneOf`, `exclusiveMinimum`, …) are dropped.
pub fn gemini_schema(schema: &Value) -> Value {
    let defs = schema.get("$defs").or_else(|| schema.get("definitions")).cloned().unwrap_or(Value::Null);
    let mut budget = MAX_REF_EXPANSIONS;
    to_gemini(schema, &defs, 0, &mut budget)
}

fn resolve<'a>(r: &str, defs: &'a Value) -> Option<&'a Value> {
    let name = r.rsplit('/').next()?;
    defs.get(name)
}

fn to_gemini(s: &Value, defs: &Value, depth: usize, budget: &mut usize) -> Value {
    let Value::Object(o) = s else { return json!({}) };
    if let Some(r) = o.get("$ref").and_then(Value::as_str) {
        if depth >= MAX_REF_DEPTH || *budget == 0 {
            return json!({"type": "OBJECT"});
        }
        *budget -= 1;
        let mut resolved = match resolve(r, defs) {
            Some(target) => to_gemini(target, defs, depth + 1, budget),
            None => json!({}),
        };
        // Sibling keywords of a `$ref` (a description, say) apply too.
        let siblings: Map<String, Value> = o.iter().filter(|(k, _)| k.as_str() != "$ref").map(|(k, v)| (k.clone(), v.clone())).collect();
        if let (Value::Object(out), Value::Object(sib)) = (&mut resolved, to_gemini(&Value::Object(siblings), defs, depth + 1, budget)) {
            for (k, v) in sib {
                out.entry(k).or_insert(v);
            }
        }
        return resolved;
    }
    let mut out = Map::new();
    let mut nullable = o.get("nullable").and_then(Value::as_bool).unwrap_or(false);
    // `type` may be a list (`["string", "null"]`).
    let mut ty: Option<String> = match o.get("type") {
        Some(Value::String(t)) => Some(t.clone()),
        Some(Value::Array(ts)) => {
            let names: Vec<&str> = ts.iter().filter_map(Value::as_str).collect();
            nullable |= names.contains(&"null");
            names.into_iter().find(|t| *t != "null").map(str::to_string)
        }
        _ => None,
    };
    if ty.as_deref() == Some("null") {
        nullable = true;
        ty = None;
    }
    let variants = o.get("anyOf").or_else(|| o.get("oneOf")).and_then(Value::as_array);
    if let Some(vs) = variants {
        let is_null = |v: &Value| v.get("type").and_then(Value::as_str) == Some("null");
        nullable |= vs.iter().any(is_null);
        let rest: Vec<&Value> = vs.iter().filter(|v| !is_null(v)).collect();
        if rest.len() == 1 && ty.is_none() {
            // `Optional[X]`: X itself, nullable.
            if let Value::Object(inner) = to_gemini(rest[0], defs, depth + 1, budget) {
                out.extend(inner);
            }
        } else if !rest.is_empty() {
            out.insert("anyOf".into(), Value::Array(rest.into_iter().map(|v| to_gemini(v, defs, depth + 1, budget)).collect()));
        }
    }
    if let Some(all) = o.get("allOf").and_then(Value::as_array) {
        // The common single-branch form (`allOf: [{$ref}]`) is the branch itself.
        if let [only] = all.as_slice() {
            if let Value::Object(inner) = to_gemini(only, defs, depth + 1, budget) {
                for (k, v) in inner {
                    out.entry(k).or_insert(v);
                }
            }
        }
    }
    if let Some(t) = ty {
        out.insert("type".into(), Value::String(t.to_ascii_uppercase()));
    }
    if let Some(c) = o.get("const") {
        out.insert("enum".into(), json!([scalar_text(c)]));
        out.insert("type".into(), json!("STRING"));
    }
    for (k, v) in o {
        match k.as_str() {
            "type" | "anyOf" | "oneOf" | "allOf" | "const" | "nullable" | "$ref" => {}
            "properties" => {
                if let Value::Object(props) = v {
                    let conv: Map<String, Value> = props.iter().map(|(n, p)| (n.clone(), to_gemini(p, defs, depth + 1, budget))).collect();
                    out.insert("properties".into(), Value::Object(conv));
                }
            }
            "items" if v.is_object() => {
                out.insert("items".into(), to_gemini(v, defs, depth + 1, budget));
            }
            // Tuple forms (`items: [...]`, `items: true`) have no counterpart.
            "items" => {}
            "enum" => {
                if let Value::Array(vals) = v {
                    let vals: Vec<Value> = vals.iter().filter(|x| !x.is_null()).map(|x| Value::String(scalar_text(x))).collect();
                    nullable |= vals.len() < v.as_array().map_or(0, Vec::len);
                    out.insert("enum".into(), Value::Array(vals));
                    // Gemini enums are strings.
                    out.insert("type".into(), json!("STRING"));
                }
            }
            "maximum" => {
                out.insert("maximum".into(), v.clone());
            }
            k if GEMINI_SCHEMA_KEYS.contains(&k) => {
                out.insert(k.to_string(), v.clone());
            }
            _ => {}
        }
    }
    if nullable {
        out.insert("nullable".into(), json!(true));
    }
    Value::Object(out)
}

fn scalar_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

// ---------------------------------------------------------------------------------------------
// JSON schema → Anthropic structured outputs

/// String formats Anthropic's structured outputs support.
const ANTHROPIC_FORMATS: [&str; 10] = ["date-time", "time", "date", "duration", "email", "hostname", "uri", "ipv4", "ipv6", "uuid"];

/// A JSON schema in the subset Anthropic's structured outputs (`output_config.format`) accept:
/// every object closed (`additionalProperties: false`), `oneOf` as `anyOf`, unsupported string
/// formats and constraints (`minimum`, `maxLength`, `pattern`, `minItems` above 1, …) moved
/// into the description so the model still sees them. `$defs` and `$ref`s are kept.
pub fn anthropic_schema(schema: &Value) -> Value {
    to_anthropic(schema)
}

fn to_anthropic(s: &Value) -> Value {
    let Value::Object(o) = s else { return s.clone() };
    let mut out = Map::new();
    let mut leftover: Vec<String> = Vec::new();
    let ty = o.get("type").and_then(Value::as_str).map(str::to_string);
    for (k, v) in o {
        match k.as_str() {
            "$defs" | "definitions" => {
                if let Value::Object(defs) = v {
                    out.insert(k.clone(), Value::Object(defs.iter().map(|(n, d)| (n.clone(), to_anthropic(d))).collect()));
                }
            }
            "$ref" | "type" | "description" | "title" | "enum" | "const" | "required" => {
                out.insert(k.clone(), v.clone());
            }
            "anyOf" | "oneOf" | "allOf" => {
                if let Value::Array(vs) = v {
                    let key = if k == "allOf" { "allOf" } else { "anyOf" };
                    out.insert(key.into(), Value::Array(vs.iter().map(to_anthropic).collect()));
                }
            }
            "properties" => {
                if let Value::Object(props) = v {
                    out.insert(k.clone(), Value::Object(props.iter().map(|(n, p)| (n.clone(), to_anthropic(p))).collect()));
                }
            }
            "items" => {
                out.insert(k.clone(), to_anthropic(v));
            }
            "additionalProperties" | "$schema" => {}
            "format" if ty.as_deref() == Some("string") && v.as_str().is_some_and(|f| ANTHROPIC_FORMATS.contains(&f)) => {
                out.insert(k.clone(), v.clone());
            }
            "minItems" if matches!(v.as_u64(), Some(0 | 1)) => {
                out.insert(k.clone(), v.clone());
            }
            _ => leftover.push(format!("{k}: {v}")),
        }
    }
    if ty.as_deref() == Some("object") {
        out.entry("properties").or_insert_with(|| json!({}));
        out.insert("additionalProperties".into(), json!(false));
    }
    if !leftover.is_empty() {
        let extra = format!("{{{}}}", leftover.join(", "));
        let d = match out.get("description").and_then(Value::as_str) {
            Some(d) => format!("{d}\n\n{extra}"),
            None => extra,
        };
        out.insert("description".into(), Value::String(d));
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_format_forms() {
        assert_eq!(response_format(&json!("json")), Ok(ResponseFormat::JsonObject));
        assert_eq!(response_format(&json!({"type": "json_object"})), Ok(ResponseFormat::JsonObject));
        assert_eq!(response_format(&json!({"type": "text"})), Ok(ResponseFormat::Text));
        let schema = json!({"type": "object", "title": "Weather report", "properties": {"t": {"type": "number"}}});
        let ResponseFormat::JsonSchema { name, schema: s, strict, .. } = response_format(&schema).unwrap() else { panic!() };
        assert_eq!((name.as_str(), &s, strict), ("Weather_report", &schema, None));
        let oa = json!({"type": "json_schema", "json_schema": {"name": "w", "schema": {"type": "object"}, "strict": true}});
        assert!(matches!(response_format(&oa), Ok(ResponseFormat::JsonSchema { ref name, strict: Some(true), .. }) if name == "w"));
        let an = json!({"type": "json_schema", "schema": {"type": "object"}});
        assert!(matches!(response_format(&an), Ok(ResponseFormat::JsonSchema { ref name, .. }) if name == "response"));
        for bad in [json!("yaml"), json!(3), json!([]), json!({"type": "json_schema"})] {
            assert!(response_format(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn gemini_schema_is_the_openapi_subset() {
        let s = json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "type": "object", "additionalProperties": false, "title": "T",
            "properties": {
                "name": {"type": ["string", "null"], "description": "n"},
                "kind": {"const": "a"},
                "size": {"enum": [1, 2, null]},
                "pet": {"$ref": "#/$defs/Pet", "description": "the pet"},
                "maybe": {"anyOf": [{"$ref": "#/$defs/Pet"}, {"type": "null"}]},
                "tags": {"type": "array", "items": {"type": "string"}, "minItems": 1, "uniqueItems": true},
                "n": {"type": "integer", "exclusiveMinimum": 0, "maximum": 9}
            },
            "required": ["name"],
            "$defs": {"Pet": {"type": "object", "properties": {"legs": {"type": "integer"}}, "additionalProperties": false}}
        });
        let g = gemini_schema(&s);
        assert_eq!(g["type"], "OBJECT");
        assert!(g.get("additionalProperties").is_none() && g.get("$schema").is_none() && g.get("$defs").is_none());
        assert_eq!(g["properties"]["name"], json!({"type": "STRING", "description": "n", "nullable": true}));
        assert_eq!(g["properties"]["kind"], json!({"enum": ["a"], "type": "STRING"}));
        assert_eq!(g["properties"]["size"], json!({"enum": ["1", "2"], "type": "STRING", "nullable": true}));
        assert_eq!(g["properties"]["pet"], json!({"type": "OBJECT", "properties": {"legs": {"type": "INTEGER"}}, "description": "the pet"}));
        assert_eq!(g["properties"]["maybe"]["nullable"], true);
        assert_eq!(g["properties"]["maybe"]["type"], "OBJECT");
        assert_eq!(g["properties"]["tags"], json!({"type": "ARRAY", "items": {"type": "STRING"}, "minItems": 1}));
        assert_eq!(g["properties"]["n"], json!({"type": "INTEGER", "maximum": 9}));
        assert_eq!(g["required"], json!(["name"]));
        // A recursive schema ends instead of looping.
        let rec = json!({"$ref": "#/$defs/Node", "$defs": {"Node": {"type": "object", "properties": {"next": {"$ref": "#/$defs/Node"}}}}});
        let g = gemini_schema(&rec);
        assert_eq!(g["type"], "OBJECT");
        // Definitions that refer to each other several times stay bounded in size.
        let fan = json!({"$ref": "#/$defs/T", "$defs": {"T": {"type": "object", "properties": {
            "a": {"$ref": "#/$defs/T"}, "b": {"$ref": "#/$defs/T"}, "c": {"$ref": "#/$defs/T"}}}}});
        assert!(gemini_schema(&fan).to_string().len() < 1_000_000);
    }

    #[test]
    fn anthropic_schema_closes_objects_and_keeps_what_it_cannot_enforce_as_description() {
        let s = json!({"type": "object", "properties": {
            "when": {"type": "string", "format": "date"},
            "code": {"type": "string", "pattern": "^[A-Z]+$", "description": "d"},
            "n": {"type": "integer", "minimum": 1},
            "xs": {"type": "array", "items": {"type": "object", "properties": {}}, "minItems": 2}
        }, "additionalProperties": true, "required": ["when"]});
        let a = anthropic_schema(&s);
        assert_eq!(a["additionalProperties"], false);
        assert_eq!(a["properties"]["when"], json!({"type": "string", "format": "date"}));
        assert_eq!(a["properties"]["code"]["description"], "d\n\n{pattern: \"^[A-Z]+$\"}");
        assert_eq!(a["properties"]["n"], json!({"type": "integer", "description": "{minimum: 1}"}));
        assert_eq!(a["properties"]["xs"]["items"]["additionalProperties"], false);
        assert!(a["properties"]["xs"].get("minItems").is_none());
    }

    #[test]
    fn camel_and_mime() {
        assert_eq!(camel("thinking_config"), "thinkingConfig");
        assert_eq!(camel("topK"), "topK");
        assert_eq!(mime_from_url("https://x/a/cat.JPG?size=2"), Some("image/jpeg"));
        assert_eq!(mime_from_url("https://x/a/cat"), None);
    }
}
