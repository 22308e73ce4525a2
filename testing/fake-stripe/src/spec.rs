//! Request validation against the served operations of Stripe's OpenAPI spec (2023-08-16),
//! extracted verbatim by `spec/extract.py` into `spec/stripe-subset.json`, plus the allow-list of
//! what the pinned `2024-09-30.acacia` version accepts and the 2023 spec does not know.

use crate::form::Param;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::OnceLock;

/// The extracted subset of Stripe's spec, embedded.
pub const SUBSET: &str = include_str!("../spec/stripe-subset.json");

/// API versions newer than the spec that the fake accepts (README: allow-list).
pub const ACACIA: &str = "2024-09-30.acacia";

/// One rejected parameter, as Stripe reports it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Invalid {
    pub code: &'static str,
    pub param: String,
    pub message: String,
}

pub type Result<T, E = Invalid> = std::result::Result<T, E>;

/// Event types of the pinned version that the 2023 spec lacks (README).
pub const ACACIA_EVENTS: [&str; 2] = ["invoice.overdue", "invoice.will_be_due"];

/// Response fields of the pinned version that the 2023 spec lacks, per object (README).
pub const ACACIA_FIELDS: [(&str, &str); 6] = [
    ("invoice", "rendering"),
    ("invoice", "issuer"),
    ("line_item", "invoice"),
    ("checkout.session", "client_secret"),
    ("checkout.session", "return_url"),
    ("checkout.session", "ui_mode"),
];

/// The request schemas of the served operations, by method and path template, and the
/// component schemas of the objects they answer with.
pub struct Spec {
    operations: HashMap<(String, String), Value>,
    schemas: serde_json::Map<String, Value>,
}

/// The spec, loaded once. The subset is embedded data checked by this module's tests, so a
/// parse failure is a build defect, not input.
pub fn spec() -> &'static Spec {
    static SPEC: OnceLock<Spec> = OnceLock::new();
    SPEC.get_or_init(|| {
        #[allow(clippy::expect_used)]
        let subset: Value = serde_json::from_str(SUBSET).expect("embedded stripe-subset.json");
        Spec::from_subset(&subset)
    })
}

impl Spec {
    fn from_subset(subset: &Value) -> Spec {
        let mut operations = HashMap::new();
        let paths = subset["paths"].as_object().cloned().unwrap_or_default();
        for (path, methods) in paths {
            let Some(methods) = methods.as_object() else {
                continue;
            };
            for (method, operation) in methods {
                let schema = if method == "get" {
                    query_schema(operation)
                } else {
                    operation["requestBody"]["content"]["application/x-www-form-urlencoded"]
                        ["schema"]
                        .clone()
                };
                let key = (method.to_uppercase(), path.clone());
                operations.insert(key, schema);
            }
        }
        let schemas = subset["components"]["schemas"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        let mut spec = Spec {
            operations,
            schemas,
        };
        spec.allow_acacia();
        spec
    }

    /// Whether the spec has this operation.
    pub fn has(&self, method: &str, template: &str) -> bool {
        self.operations
            .contains_key(&(method.to_owned(), template.to_owned()))
    }

    /// Checks a request's parameters (body for POST/DELETE, query for GET) against its schema.
    pub fn check(&self, method: &str, template: &str, params: &Param) -> Result<()> {
        let Some(schema) = self
            .operations
            .get(&(method.to_owned(), template.to_owned()))
        else {
            return Err(Invalid {
                code: "resource_missing",
                param: String::new(),
                message: format!("Unrecognized request URL ({method}: {template})."),
            });
        };
        check_object(schema, params, "")
    }

    /// What is wrong with an answer's top-level fields against the spec's schema `name`
    /// (`invoice`, `customer`, …): fields it does not know (beyond [`ACACIA_FIELDS`]) and
    /// required fields that are absent. Empty when the shape is right.
    pub fn shape_problems(&self, name: &str, object: &Value) -> Vec<String> {
        let Some(schema) = self.schemas.get(name) else {
            return vec![format!("the spec has no schema {name}")];
        };
        let Some(fields) = object.as_object() else {
            return vec![format!("{name} is not an object")];
        };
        let known = |field: &str| {
            schema["properties"].get(field).is_some() || ACACIA_FIELDS.contains(&(name, field))
        };
        let mut problems: Vec<String> = fields
            .keys()
            .filter(|field| !known(field))
            .map(|field| format!("{name}.{field} is not in the spec"))
            .collect();
        for required in schema["required"].as_array().into_iter().flatten() {
            if let Some(field) = required.as_str()
                && !fields.contains_key(field)
            {
                problems.push(format!("{name}.{field} is required but absent"));
            }
        }
        problems
    }

    /// The allow-list: what `2024-09-30.acacia` accepts beyond the 2023-08-16 spec.
    fn allow_acacia(&mut self) {
        let rendering = json!({
            "anyOf": [{
                "type": "object",
                "properties": {
                    "amount_tax_display": {"type": "string", "enum": ["", "exclude_tax", "include_inclusive_tax"]},
                    "pdf": {"type": "object", "properties": {"page_size": {"type": "string", "enum": ["a4", "auto", "letter"]}}},
                    "template": {"type": "string", "maxLength": 5000},
                    "template_version": {"anyOf": [{"type": "integer"}, {"type": "string", "enum": [""]}]}
                }
            }, {"type": "string", "enum": [""]}]
        });
        for path in ["/v1/invoices", "/v1/invoices/{invoice}"] {
            if let Some(props) = self.properties_mut("POST", path) {
                props.insert("rendering".to_owned(), rendering.clone());
            }
        }
        self.allow_acacia_checkout();
        if let Some(values) = self
            .properties_mut("POST", "/v1/webhook_endpoints")
            .and_then(|props| props.get_mut("enabled_events"))
            .and_then(|events| events.get_mut("items"))
            .and_then(|items| items.get_mut("enum"))
            .and_then(Value::as_array_mut)
        {
            values.extend(ACACIA_EVENTS.iter().map(|e| json!(e)));
        }
        if let Some(values) = self
            .properties_mut("POST", "/v1/webhook_endpoints")
            .and_then(|props| props.get_mut("api_version"))
            .and_then(|version| version.get_mut("enum"))
            .and_then(Value::as_array_mut)
        {
            values.push(json!(ACACIA));
        }
    }

    /// Embedded checkout and its consent and text options (2023-10 and later), which
    /// OpenMeter's checkout-session flow may send.
    fn allow_acacia_checkout(&mut self) {
        let message = json!({"anyOf": [{"type": "object", "properties": {"message": {"type": "string", "maxLength": 1200}},
                                        "required": ["message"]}, {"type": "string", "enum": [""]}]});
        // Embedded sessions take `return_url` instead; ops::contract requires one of the two.
        if let Some(required) = self
            .operations
            .get_mut(&("POST".to_owned(), "/v1/checkout/sessions".to_owned()))
            .and_then(|schema| schema.get_mut("required"))
            .and_then(Value::as_array_mut)
        {
            required.retain(|name| name != "success_url");
        }
        let Some(props) = self.properties_mut("POST", "/v1/checkout/sessions") else {
            return;
        };
        props.insert(
            "ui_mode".to_owned(),
            json!({"type": "string", "enum": ["embedded", "hosted"]}),
        );
        props.insert(
            "return_url".to_owned(),
            json!({"type": "string", "maxLength": 5000}),
        );
        props.insert(
            "redirect_on_completion".to_owned(),
            json!({"type": "string", "enum": ["always", "if_required", "never"]}),
        );
        let mut extend = |field: &str, key: &str, schema: Value| {
            if let Some(inner) = props
                .get_mut(field)
                .and_then(|f| f.get_mut("properties"))
                .and_then(Value::as_object_mut)
            {
                inner.insert(key.to_owned(), schema);
            }
        };
        extend(
            "consent_collection",
            "payment_method_reuse_agreement",
            json!({"type": "object", "properties": {"position": {"type": "string", "enum": ["auto", "hidden"]}},
                   "required": ["position"]}),
        );
        extend("custom_text", "after_submit", message.clone());
        extend("custom_text", "terms_of_service_acceptance", message);
        extend(
            "tax_id_collection",
            "required",
            json!({"type": "string", "enum": ["if_supported", "never"]}),
        );
    }

    fn properties_mut(
        &mut self,
        method: &str,
        path: &str,
    ) -> Option<&mut serde_json::Map<String, Value>> {
        self.operations
            .get_mut(&(method.to_owned(), path.to_owned()))?
            .get_mut("properties")?
            .as_object_mut()
    }
}

/// A GET's query parameters as one object schema (no other keys allowed).
fn query_schema(operation: &Value) -> Value {
    let mut properties = serde_json::Map::new();
    let mut required = Vec::new();
    for parameter in operation["parameters"].as_array().into_iter().flatten() {
        if parameter["in"] != "query" {
            continue;
        }
        let Some(name) = parameter["name"].as_str() else {
            continue;
        };
        properties.insert(name.to_owned(), parameter["schema"].clone());
        if parameter["required"] == true {
            required.push(json!(name));
        }
    }
    json!({"type": "object", "properties": properties, "required": required, "additionalProperties": false})
}

fn child(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}[{key}]")
    }
}

fn invalid(code: &'static str, path: &str, message: String) -> Invalid {
    Invalid {
        code,
        param: path.to_owned(),
        message,
    }
}

/// Checks one value against one schema; `path` is the form key (`a[b][0]`).
fn check(schema: &Value, param: &Param, path: &str) -> Result<()> {
    // An empty string unsets any optional parameter.
    if matches!(param, Param::Value(v) if v.is_empty()) {
        return Ok(());
    }
    if let Some(branches) = schema["anyOf"].as_array() {
        return check_any(branches, param, path);
    }
    match schema["type"].as_str() {
        Some("object") => check_object(schema, param, path),
        Some("array") => check_array(schema, param, path),
        Some(scalar) => {
            let Param::Value(value) = param else {
                return Err(invalid(
                    "parameter_invalid_string",
                    path,
                    format!("Invalid {scalar}: {path} must be a single value, not a hash."),
                ));
            };
            check_scalar(schema, scalar, value, path)
        }
        None => Ok(()),
    }
}

/// The first branch that accepts wins; otherwise the error of a branch of the right shape.
fn check_any(branches: &[Value], param: &Param, path: &str) -> Result<()> {
    let mut best: Option<Invalid> = None;
    for branch in branches {
        match check(branch, param, path) {
            Ok(()) => return Ok(()),
            Err(error) => {
                let shaped = matches!(
                    (branch["type"].as_str(), param),
                    (Some("object" | "array"), Param::Map(_))
                        | (
                            Some("string" | "integer" | "number" | "boolean"),
                            Param::Value(_)
                        )
                );
                if best.is_none() || shaped {
                    best = Some(error);
                }
            }
        }
    }
    Err(best
        .unwrap_or_else(|| invalid("parameter_invalid_string", path, format!("Invalid {path}."))))
}

fn check_object(schema: &Value, param: &Param, path: &str) -> Result<()> {
    let Param::Map(map) = param else {
        return Err(invalid(
            "parameter_invalid_object",
            path,
            format!("Invalid object: {path} must be a hash."),
        ));
    };
    let properties = schema["properties"].as_object();
    for (key, value) in map {
        let sub = properties
            .and_then(|p| p.get(key))
            .or_else(|| schema.get("additionalProperties").filter(|a| a.is_object()));
        let key_path = child(path, key);
        match sub {
            Some(sub) => check(sub, value, &key_path)?,
            None => {
                return Err(invalid(
                    "parameter_unknown",
                    &key_path,
                    format!("Received unknown parameter: {key_path}"),
                ));
            }
        }
    }
    for name in schema["required"].as_array().into_iter().flatten() {
        let Some(name) = name.as_str() else { continue };
        let present = match map.get(name) {
            Some(Param::Value(v)) => !v.is_empty(),
            Some(Param::Map(_)) => true,
            None => false,
        };
        if !present {
            let key_path = child(path, name);
            return Err(invalid(
                "parameter_missing",
                &key_path,
                format!("Missing required param: {key_path}."),
            ));
        }
    }
    Ok(())
}

fn check_array(schema: &Value, param: &Param, path: &str) -> Result<()> {
    let Some(items) = param.items() else {
        return Err(invalid(
            "parameter_invalid_array",
            path,
            format!("Invalid array: {path} must be indexed like {path}[0] or {path}[]."),
        ));
    };
    for (index, item) in items.into_iter().enumerate() {
        check(&schema["items"], item, &child(path, &index.to_string()))?;
    }
    Ok(())
}

fn check_scalar(schema: &Value, scalar: &str, value: &str, path: &str) -> Result<()> {
    match scalar {
        "integer" if value.parse::<i64>().is_err() => Err(invalid(
            "parameter_invalid_integer",
            path,
            format!("Invalid integer: {value}"),
        )),
        "number" if value.parse::<f64>().is_err() => Err(invalid(
            "parameter_invalid_number",
            path,
            format!("Invalid number: {value}"),
        )),
        "boolean" if value != "true" && value != "false" => Err(invalid(
            "parameter_invalid_boolean",
            path,
            format!("Invalid boolean: {value}"),
        )),
        "string" => check_string(schema, value, path),
        _ => Ok(()),
    }
}

fn check_string(schema: &Value, value: &str, path: &str) -> Result<()> {
    // `x-stripeBypassValidation` tells SDKs not to check an enum because Stripe may add
    // values; the fake checks every enum so a typo in our client fails its test.
    if let Some(values) = schema["enum"].as_array()
        && !values.iter().any(|v| v.as_str() == Some(value))
    {
        let allowed: Vec<&str> = values.iter().filter_map(Value::as_str).collect();
        let listed = if allowed.len() <= 12 {
            allowed.join(", ")
        } else {
            format!("the {} values in the spec", allowed.len())
        };
        return Err(invalid(
            "parameter_invalid_string",
            path,
            format!("Invalid {path}: must be one of {listed}"),
        ));
    }
    if let Some(max) = schema["maxLength"].as_u64()
        && value.chars().count() as u64 > max
    {
        return Err(invalid(
            "parameter_invalid_string",
            path,
            format!("Invalid {path}: must be at most {max} characters"),
        ));
    }
    if schema["format"] == "decimal" && !is_decimal(value) {
        return Err(invalid(
            "parameter_invalid_number",
            path,
            format!("Invalid decimal: {value}"),
        ));
    }
    Ok(())
}

fn is_decimal(value: &str) -> bool {
    let digits = value.strip_prefix('-').unwrap_or(value);
    let mut parts = digits.splitn(2, '.');
    let whole = parts.next().unwrap_or_default();
    let fraction = parts.next().unwrap_or("0");
    !whole.is_empty()
        && whole.bytes().all(|b| b.is_ascii_digit())
        && !fraction.is_empty()
        && fraction.len() <= 12
        && fraction.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests;
