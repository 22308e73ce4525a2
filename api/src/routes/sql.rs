//! `POST /api/v1/sql` (Metron's own): read-only SQL over `events` and `meter_<slug>`.

use crate::error::ApiError;
use crate::limits::{SQL_ROWS_DEFAULT, SQL_ROWS_MAX, SQL_TIMEOUT_MS_DEFAULT, SQL_TIMEOUT_MS_MAX};
use crate::state::AppState;
use actix_web::{HttpRequest, HttpResponse, web};
use datafusion_arrow::{csv, json};
use serde::Deserialize;
use serde_json::{Value, json as json_value};
use std::time::Duration;

use metron_storage::query::SqlAnswer;

mod datafusion_arrow {
    pub use metron_storage::arrow::{csv, json};
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SqlBody {
    pub(crate) sql: String,
    #[serde(default)]
    limit: Option<usize>,
    #[serde(default)]
    timeout_ms: Option<u64>,
}

impl SqlBody {
    /// The row limit and timeout asked for, defaults filled in; a limit out of range is a 400.
    pub(crate) fn limits(&self) -> Result<(usize, Duration), ApiError> {
        let limit = self.limit.unwrap_or(SQL_ROWS_DEFAULT);
        if limit == 0 || limit > SQL_ROWS_MAX {
            return Err(ApiError::bad_request(format!(
                "limit must be from 1 to {SQL_ROWS_MAX}"
            )));
        }
        let timeout = Duration::from_millis(
            self.timeout_ms
                .unwrap_or(SQL_TIMEOUT_MS_DEFAULT)
                .min(SQL_TIMEOUT_MS_MAX),
        );
        Ok((limit, timeout))
    }
}

pub async fn run(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Json<SqlBody>,
) -> Result<HttpResponse, ApiError> {
    state.ready()?;
    let body = body.into_inner();
    let (limit, timeout) = body.limits()?;
    let answer = state
        .pipeline
        .sql(state.pipeline.namespace(), body.sql, limit, timeout)
        .await?;
    answer_response(&req, &answer)
}

/// A SQL answer as the client asked for it: CSV, or JSON columns and rows.
pub(crate) fn answer_response(
    req: &HttpRequest,
    answer: &SqlAnswer,
) -> Result<HttpResponse, ApiError> {
    if crate::params::wants_csv(req.headers()) {
        let text = to_csv(answer)
            .map_err(|e| ApiError::new(actix_web::http::StatusCode::INTERNAL_SERVER_ERROR, e))?;
        return Ok(HttpResponse::Ok().content_type("text/csv").body(text));
    }
    let rows = to_rows(answer)
        .map_err(|e| ApiError::new(actix_web::http::StatusCode::INTERNAL_SERVER_ERROR, e))?;
    let columns: Vec<&str> = answer
        .schema
        .fields()
        .iter()
        .map(|f| f.name().as_str())
        .collect();
    Ok(HttpResponse::Ok()
        .json(json_value!({ "columns": columns, "rows": rows, "truncated": answer.truncated })))
}

/// What a standby asks the holder for before it runs a SQL query itself.
#[derive(Debug, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct TablesBody {
    pub sql: String,
}

/// The path of [`tables`]: not part of the public API, only for standbys.
pub const TABLES_PATH: &str = "/internal/v1/sql/tables";

/// For a standby: the files and live rows of the tables a SQL text names, in
/// `metron_storage::query::wire`'s encoding; the standby runs the query.
pub async fn tables(
    state: web::Data<AppState>,
    body: web::Json<TablesBody>,
) -> Result<HttpResponse, ApiError> {
    state.ready()?;
    // Failpoint `sql.tables=error`: answer as a binary without this route would.
    if metron_engine::failpoint::eval("sql.tables") == Some(metron_engine::failpoint::Action::Error)
    {
        return Ok(HttpResponse::NotFound().finish());
    }
    let bytes = state
        .pipeline
        .sql_tables_encoded(state.pipeline.namespace(), &body.sql)
        .await?;
    Ok(HttpResponse::Ok()
        .content_type(metron_storage::query::wire::CONTENT_TYPE)
        .body(bytes))
}

fn to_rows(answer: &SqlAnswer) -> Result<Vec<Value>, String> {
    let mut buffer = Vec::new();
    {
        let mut writer = json::ArrayWriter::new(&mut buffer);
        for batch in &answer.batches {
            writer.write(batch).map_err(|e| e.to_string())?;
        }
        writer.finish().map_err(|e| e.to_string())?;
    }
    let objects: Vec<serde_json::Map<String, Value>> = if buffer.is_empty() {
        Vec::new()
    } else {
        serde_json::from_slice(&buffer).map_err(|e| e.to_string())?
    };
    Ok(objects
        .into_iter()
        .map(|mut o| {
            Value::Array(
                answer
                    .schema
                    .fields()
                    .iter()
                    .map(|f| o.remove(f.name()).unwrap_or(Value::Null))
                    .collect(),
            )
        })
        .collect())
}

fn to_csv(answer: &SqlAnswer) -> Result<String, String> {
    let mut buffer = Vec::new();
    {
        let mut writer = csv::WriterBuilder::new()
            .with_header(true)
            .build(&mut buffer);
        if answer.batches.is_empty() {
            let names: Vec<&str> = answer
                .schema
                .fields()
                .iter()
                .map(|f| f.name().as_str())
                .collect();
            return Ok(format!("{}\n", names.join(",")));
        }
        for batch in &answer.batches {
            writer.write(batch).map_err(|e| e.to_string())?;
        }
    }
    String::from_utf8(buffer).map_err(|e| e.to_string())
}
