//! The hot path of entitlement value checks, in front of actix's router.
//!
//! actix-web matches a dynamic route with a regular expression (`regex-lite`'s PikeVM):
//! about 8 % of the server's CPU per value check went there. [`ValueChecks`] is the
//! app's first service: a static prefix (`/api`) and a guard that matches the three value
//! paths by bytes, so a check never reaches a regular expression; every other request
//! falls through to the router as before. A path with a `%` is left to the router, which
//! decodes it: the fast path sees only paths that need no decoding, so both answer alike
//! (`api/tests/it/entitlements.rs` checks it). The answer itself is the router handler's,
//! [`value_check`], written by [`write_value`] without a JSON tree.

use crate::error::ApiError;
use crate::routes::entitlements::{Api, CUSTOMER_V1, V1_SUBJECT, V2_CUSTOMER, value_check};
use crate::state::AppState;
use actix_web::dev::{
    AppService, HttpServiceFactory, ResourceDef, ServiceRequest, ServiceResponse, fn_service,
};
use actix_web::guard::{Guard, GuardContext};
use actix_web::http::{Method, StatusCode};
use actix_web::{ResponseError, web};
use metron_actors::customer::ValueAnswer;
use metron_actors::customer::views::Flavor;
use rust_decimal::Decimal;
use std::io::Write;

/// The value checks' service, registered before every route (see [`crate::configure`]).
pub struct ValueChecks;

/// A value check the path names: who answers it and its two path segments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Check<'a> {
    pub api: ApiKind,
    pub owner: &'a str,
    pub ent: &'a str,
}

/// Which of the three value routes a path is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiKind {
    /// `/api/v2/customers/{owner}/entitlements/{ent}/value`
    V2Customer,
    /// `/api/v1/subjects/{owner}/entitlements/{ent}/value`
    V1Subject,
    /// `/api/v1/customers/{owner}/entitlements/{ent}/value`
    V1Customer,
}

impl ApiKind {
    fn api(self) -> Api {
        match self {
            ApiKind::V2Customer => V2_CUSTOMER,
            ApiKind::V1Subject => V1_SUBJECT,
            ApiKind::V1Customer => CUSTOMER_V1,
        }
    }
}

/// The value check a request path names, as actix's router would match it: the exact
/// route, each `{segment}` non-empty and without `/`. `None` for any other path, and for
/// a path with a `%` (the router decodes it before matching).
pub fn match_path(path: &str) -> Option<Check<'_>> {
    if path.as_bytes().contains(&b'%') {
        return None;
    }
    let (api, rest) = if let Some(rest) = path.strip_prefix("/api/v2/customers/") {
        (ApiKind::V2Customer, rest)
    } else if let Some(rest) = path.strip_prefix("/api/v1/subjects/") {
        (ApiKind::V1Subject, rest)
    } else if let Some(rest) = path.strip_prefix("/api/v1/customers/") {
        (ApiKind::V1Customer, rest)
    } else {
        return None;
    };
    let rest = rest.strip_suffix("/value")?;
    // The owner ends at the first `/`, which must open `/entitlements/`.
    let (owner, rest) = rest.split_at(rest.find('/')?);
    let ent = rest.strip_prefix("/entitlements/")?;
    let segment = |s: &str| !s.is_empty() && !s.contains('/');
    (segment(owner) && segment(ent)).then_some(Check { api, owner, ent })
}

/// Matches GET requests whose path [`match_path`] knows.
struct IsValueCheck;

impl Guard for IsValueCheck {
    fn check(&self, ctx: &GuardContext<'_>) -> bool {
        let head = ctx.head();
        head.method == Method::GET && match_path(head.uri.path()).is_some()
    }
}

impl HttpServiceFactory for ValueChecks {
    fn register(self, config: &mut AppService) {
        // A static prefix costs the router a `starts_with`; the guard does the rest.
        config.register_service(
            ResourceDef::prefix("/api"),
            Some(vec![Box::new(IsValueCheck)]),
            fn_service(serve),
            None,
        );
    }
}

async fn serve(req: ServiceRequest) -> Result<ServiceResponse, actix_web::Error> {
    let (req, _payload) = req.into_parts();
    let state = req.app_data::<web::Data<AppState>>();
    let response = match (match_path(req.path()), state) {
        (Some(check), Some(state)) => {
            match value_check(
                state,
                check.api.api(),
                check.owner,
                check.ent,
                req.query_string(),
            )
            .await
            {
                Ok(response) => response,
                Err(error) => error.error_response(),
            }
        }
        // The guard matched the path; no state: the app was built without it (as the
        // router's extractor, a 500).
        _ => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the application state is not configured",
        )
        .error_response(),
    };
    Ok(ServiceResponse::new(req, response))
}

/// Writes an entitlement value as OpenMeter's `EntitlementValue` JSON, byte for byte what
/// `serde_json` prints for [`crate::routes::entitlements::value_json`] (keys sorted, numbers
/// with every digit), without building the tree.
pub fn write_value(out: &mut Vec<u8>, answer: &ValueAnswer, flavor: Flavor) {
    match answer {
        ValueAnswer::Metered { has_access, value } => {
            let v = &value.value;
            out.extend_from_slice(b"{\"balance\":");
            write_decimal(out, v.balance);
            if flavor == Flavor::V2 {
                out.extend_from_slice(b",\"grantBalances\":{");
                write_grant_balances(out, &v.grant_balances);
                out.push(b'}');
            }
            out.extend_from_slice(if *has_access {
                b",\"hasAccess\":true,\"overage\":"
            } else {
                b",\"hasAccess\":false,\"overage\":"
            });
            write_decimal(out, v.overage);
            out.extend_from_slice(b",\"totalAvailableGrantAmount\":");
            write_decimal(out, v.total_available_grant_amount);
            out.extend_from_slice(b",\"usage\":");
            write_decimal(out, v.usage);
            out.push(b'}');
        }
        ValueAnswer::Granted {
            config: Some(config),
        } => {
            out.extend_from_slice(b"{\"config\":");
            write_str(out, config);
            out.extend_from_slice(b",\"hasAccess\":true}");
        }
        ValueAnswer::Granted { config: None } => out.extend_from_slice(b"{\"hasAccess\":true}"),
        // `Past` is resolved by the service before it answers.
        ValueAnswer::Inactive | ValueAnswer::Past(_) => {
            out.extend_from_slice(b"{\"hasAccess\":false}")
        }
    }
}

/// The grants' balances as a JSON object's members, in key order, a repeated key once with
/// its last balance (as a map collects them). The engine gives them sorted by id.
fn write_grant_balances(out: &mut Vec<u8>, balances: &[(String, Decimal)]) {
    let sorted = balances.windows(2).all(|w| w[0].0 < w[1].0);
    let mut first = true;
    let mut member = |out: &mut Vec<u8>, id: &str, balance: Decimal| {
        if !std::mem::take(&mut first) {
            out.push(b',');
        }
        write_str(out, id);
        out.push(b':');
        write_decimal(out, balance);
    };
    if sorted {
        for (id, balance) in balances {
            member(out, id, *balance);
        }
    } else {
        let map: std::collections::BTreeMap<&str, Decimal> =
            balances.iter().map(|(id, b)| (id.as_str(), *b)).collect();
        for (id, balance) in map {
            member(out, id, balance);
        }
    }
}

/// A decimal as `metron_engine::decimal::to_json_text` prints it: normalized, `0` for zero.
fn write_decimal(out: &mut Vec<u8>, value: Decimal) {
    let normalized = value.normalize();
    if normalized.is_zero() {
        out.push(b'0');
    } else {
        // Writing into a Vec cannot fail.
        let _ = write!(out, "{normalized}");
    }
}

/// A JSON string, escaped as `serde_json` escapes it.
fn write_str(out: &mut Vec<u8>, s: &str) {
    // Writing into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

#[cfg(test)]
mod tests;
