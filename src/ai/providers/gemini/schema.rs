//! OpenAI's JSON Schemas (tool `parameters`, `response_format.json_schema.schema`) reduced to
//! the subset Gemini accepts.
//!
//! Gemini's `Schema` is "a select subset of an OpenAPI 3.0 schema object" (Gemini API
//! reference, "Schema"); a keyword outside it fails the whole request with 400
//! `INVALID_ARGUMENT`. So keywords are kept from an allow-list rather than stripped from a
//! deny-list: `additionalProperties`, `$schema`, `strict`, `$id`, `examples`, `not`, ... are
//! dropped, whatever else a client's schema generator adds.

use serde_json::{Map, Value};

/// Keywords copied unchanged (Gemini API reference, "Schema" fields).
const PLAIN_KEYWORDS: &[&str] = &[
    "title",
    "description",
    "nullable",
    "required",
    "minItems",
    "maxItems",
    "minLength",
    "maxLength",
    "minProperties",
    "maxProperties",
    "pattern",
    "minimum",
    "maximum",
    "example",
    "default",
    "propertyOrdering",
];

/// String formats Gemini accepts; any other (`email`, `uri`, ...) is refused for `STRING`.
const STRING_FORMATS: &[&str] = &["enum", "date-time"];

/// How deep local `$ref`s are inlined; a recursive schema is cut off there (Gemini has no
/// references, so a recursive type cannot be expressed exactly anyway).
const MAX_REF_DEPTH: usize = 8;

/// `schema` in Gemini's subset. Local references (`#/$defs/Name`, `#/definitions/Name`, as
/// Pydantic and zod emit them) are inlined from the root schema's definitions.
pub(super) fn to_gemini_schema(schema: &Value) -> Value {
    convert(schema, schema, 0)
}

/// Tool `parameters` in Gemini's subset, or `None` for a function without parameters: an
/// object schema with no properties is left out, since Gemini refuses an `OBJECT` whose
/// `properties` is empty.
pub(super) fn to_gemini_parameters(schema: &Value) -> Option<Value> {
    let converted = to_gemini_schema(schema);
    let no_properties = converted
        .get("properties")
        .and_then(Value::as_object)
        .is_none_or(Map::is_empty);
    let is_object = converted.get("type").and_then(Value::as_str) == Some("object");
    if is_object && no_properties {
        return None;
    }
    Some(converted)
}

fn convert(schema: &Value, root: &Value, depth: usize) -> Value {
    let Some(object) = schema.as_object() else {
        return Value::Object(Map::new());
    };
    if let Some(target) = object.get("$ref").and_then(Value::as_str) {
        if depth < MAX_REF_DEPTH {
            if let Some(resolved) = resolve_local_ref(root, target) {
                let mut inlined = convert(resolved, root, depth + 1);
                // Keywords beside `$ref` (a description, say) refine the referenced schema.
                let beside = convert_members(object, root, depth);
                if let (Value::Object(inlined), Value::Object(beside)) = (&mut inlined, beside) {
                    inlined.extend(beside);
                }
                return inlined;
            }
        }
    }
    convert_members(object, root, depth)
}

fn convert_members(object: &Map<String, Value>, root: &Value, depth: usize) -> Value {
    let mut out = Map::new();
    let mut nullable = false;
    for (key, value) in object {
        match key.as_str() {
            "type" => match value {
                Value::String(_) => {
                    out.insert(key.clone(), value.clone());
                }
                // JSON Schema's `["string", "null"]`: Gemini takes one type plus `nullable`.
                Value::Array(types) => {
                    nullable |= types.iter().any(|t| t == "null");
                    if let Some(first) = types.iter().find(|t| t.is_string() && *t != "null") {
                        out.insert(key.clone(), first.clone());
                    }
                }
                _ => {}
            },
            "properties" => {
                if let Value::Object(properties) = value {
                    let converted = properties
                        .iter()
                        .map(|(name, property)| (name.clone(), convert(property, root, depth)))
                        .collect();
                    out.insert(key.clone(), Value::Object(converted));
                }
            }
            "items" => {
                // A tuple's `items: [..]` (draft 4 to 2019-09) keeps its first item's type.
                let item = match value {
                    Value::Array(items) => items.first(),
                    other => Some(other),
                };
                if let Some(item) = item {
                    out.insert(key.clone(), convert(item, root, depth));
                }
            }
            // Gemini has `anyOf` only; for choosing among alternatives `oneOf` means the same.
            "anyOf" | "oneOf" => {
                if let Value::Array(options) = value {
                    let options: Vec<Value> = options
                        .iter()
                        .filter(|o| o.get("type").and_then(Value::as_str) != Some("null"))
                        .map(|o| convert(o, root, depth))
                        .collect();
                    nullable |= value
                        .as_array()
                        .is_some_and(|all| all.len() != options.len());
                    if options.len() == 1 {
                        // `anyOf: [X, null]` (Pydantic's Optional[X]) is X, nullable.
                        if let Some(Value::Object(only)) = options.into_iter().next() {
                            out.extend(only);
                        }
                    } else if !options.is_empty() {
                        out.insert("anyOf".to_string(), Value::Array(options));
                    }
                }
            }
            // Gemini's `enum` lists strings only.
            "enum"
                if value
                    .as_array()
                    .is_some_and(|v| v.iter().all(Value::is_string)) =>
            {
                out.insert(key.clone(), value.clone());
            }
            "const" if value.is_string() => {
                out.insert("enum".to_string(), Value::Array(vec![value.clone()]));
            }
            "format" => {
                let is_string = object.get("type").and_then(Value::as_str) == Some("string");
                let supported = value
                    .as_str()
                    .is_some_and(|f| !is_string || STRING_FORMATS.contains(&f));
                if supported {
                    out.insert(key.clone(), value.clone());
                }
            }
            k if PLAIN_KEYWORDS.contains(&k) => {
                out.insert(key.clone(), value.clone());
            }
            // Everything else: not in Gemini's subset.
            _ => {}
        }
    }
    if nullable {
        out.insert("nullable".to_string(), Value::Bool(true));
    }
    Value::Object(out)
}

/// The schema a local reference (`#/$defs/Name` or `#/definitions/Name`) points at.
fn resolve_local_ref<'a>(root: &'a Value, target: &str) -> Option<&'a Value> {
    let pointer = target.strip_prefix('#')?;
    root.pointer(pointer).filter(|v| v.is_object())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keywords_gemini_rejects_are_dropped() {
        let schema = json!({
            "$schema": "http://json-schema.org/draft-07/schema#",
            "type": "object",
            "strict": true,
            "additionalProperties": false,
            "properties": {"city": {"type": "string", "description": "City", "examples": ["Paris"]}},
            "required": ["city"]
        });
        assert_eq!(
            to_gemini_schema(&schema),
            json!({
                "type": "object",
                "properties": {"city": {"type": "string", "description": "City"}},
                "required": ["city"]
            })
        );
    }

    #[test]
    fn property_names_are_kept_even_when_they_look_like_keywords() {
        let schema = json!({"type": "object", "properties": {"strict": {"type": "boolean"}}});
        assert_eq!(to_gemini_schema(&schema), schema);
    }

    #[test]
    fn nested_items_and_any_of_are_converted() {
        let schema = json!({
            "type": "array",
            "items": {"type": "object", "additionalProperties": false,
                      "properties": {"v": {"oneOf": [{"type": "string"}, {"type": "integer"}]}}}
        });
        assert_eq!(
            to_gemini_schema(&schema),
            json!({
                "type": "array",
                "items": {"type": "object",
                          "properties": {"v": {"anyOf": [{"type": "string"}, {"type": "integer"}]}}}
            })
        );
    }

    #[test]
    fn type_with_null_becomes_nullable() {
        let schema = json!({"type": ["string", "null"]});
        assert_eq!(
            to_gemini_schema(&schema),
            json!({"type": "string", "nullable": true})
        );
    }

    #[test]
    fn any_of_with_null_becomes_the_other_schema_nullable() {
        let schema = json!({"anyOf": [{"type": "integer"}, {"type": "null"}], "description": "n"});
        assert_eq!(
            to_gemini_schema(&schema),
            json!({"type": "integer", "nullable": true, "description": "n"})
        );
    }

    #[test]
    fn string_formats_outside_gemini_subset_are_dropped() {
        let schema = json!({"type": "object", "properties": {
            "mail": {"type": "string", "format": "email"},
            "at": {"type": "string", "format": "date-time"},
            "n": {"type": "integer", "format": "int64"}
        }});
        assert_eq!(
            to_gemini_schema(&schema)["properties"],
            json!({
                "mail": {"type": "string"},
                "at": {"type": "string", "format": "date-time"},
                "n": {"type": "integer", "format": "int64"}
            })
        );
    }

    #[test]
    fn non_string_enums_are_dropped_and_string_const_becomes_enum() {
        assert_eq!(
            to_gemini_schema(&json!({"type": "integer", "enum": [1, 2]})),
            json!({"type": "integer"})
        );
        assert_eq!(
            to_gemini_schema(&json!({"type": "string", "const": "x"})),
            json!({"type": "string", "enum": ["x"]})
        );
    }

    #[test]
    fn local_refs_are_inlined() {
        let schema = json!({
            "type": "object",
            "properties": {"home": {"$ref": "#/$defs/Address", "description": "where"}},
            "$defs": {"Address": {"type": "object", "title": "Address",
                                  "properties": {"street": {"type": "string"}}}}
        });
        assert_eq!(
            to_gemini_schema(&schema),
            json!({
                "type": "object",
                "properties": {"home": {"type": "object", "title": "Address", "description": "where",
                                        "properties": {"street": {"type": "string"}}}}
            })
        );
    }

    #[test]
    fn recursive_refs_stop_at_the_depth_limit() {
        let schema = json!({
            "$ref": "#/definitions/Node",
            "definitions": {"Node": {"type": "object",
                                     "properties": {"next": {"$ref": "#/definitions/Node"}}}}
        });
        let mut depth = 0;
        let mut node = &to_gemini_schema(&schema);
        while let Some(next) = node.get("properties").and_then(|p| p.get("next")) {
            node = next;
            depth += 1;
        }
        assert_eq!(depth, MAX_REF_DEPTH);
    }

    #[test]
    fn parameterless_functions_have_no_parameters() {
        assert_eq!(
            to_gemini_parameters(&json!({"type": "object", "properties": {}})),
            None
        );
        assert_eq!(to_gemini_parameters(&json!({"type": "object"})), None);
        assert!(to_gemini_parameters(&json!({"type": "object",
            "properties": {"a": {"type": "string"}}}))
        .is_some());
    }
}
