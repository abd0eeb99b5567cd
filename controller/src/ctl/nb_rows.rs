//! `ycloudctl nb-rows`: the NB rows a service owns, found by its ownership keys
//! (`ycloud.io/kind=service`, `ycloud.io/name=NAMESPACE/NAME`) in every NB table that has
//! `external_ids`, in one transaction.

use std::fmt::Write as _;
use std::time::Duration;

use serde_json::{Value, json};

use super::{CtlError, NB, block_on, connect_nb, map_get, select, show};
use crate::compiler::names::{KIND_KEY, NAME_KEY, OwnerKind, ROLE_KEY};

/// `(table, row)` for every row the service owns, tables in name order.
pub fn rows(nb: &str, service: &str, timeout: Duration) -> Result<Vec<(String, Value)>, CtlError> {
    check_service_name(service)?;
    block_on(nb, timeout, async {
        let client = connect_nb(nb, timeout).await?;
        let schema = client
            .get_schema_json(NB)
            .await
            .map_err(|source| CtlError::Query {
                what: format!("reading the {NB} schema"),
                remote: nb.to_string(),
                source: Box::new(source),
            })?;
        let mut tables: Vec<String> = schema["tables"]
            .as_object()
            .map(|t| {
                t.iter()
                    .filter(|(_, def)| def["columns"].get("external_ids").is_some())
                    .map(|(name, _)| name.clone())
                    .collect()
            })
            .unwrap_or_default();
        tables.sort();
        let owner = json!([
            "map",
            [[KIND_KEY, OwnerKind::Service.as_str()], [NAME_KEY, service]]
        ]);
        let selects: Vec<(&str, Value)> = tables
            .iter()
            .map(|t| (t.as_str(), json!([["external_ids", "includes", owner]])))
            .collect();
        let results = select(&client, nb, &selects).await;
        client.close();
        Ok(tables
            .iter()
            .zip(results?)
            .flat_map(|(t, rows)| rows.into_iter().map(move |r| (t.clone(), r)))
            .collect())
    })
}

/// `NAMESPACE/NAME`, both parts non-empty.
pub fn check_service_name(service: &str) -> Result<(), CtlError> {
    match service.split_once('/') {
        Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => Ok(()),
        _ => Err(CtlError::Usage(format!(
            "service {service:?}: expected NAMESPACE/NAME, e.g. shop/web"
        ))),
    }
}

/// The rows as text: one header line per row (table, uuid, name, role), then its non-empty
/// columns, then a count line.
pub fn render(service: &str, rows: &[(String, Value)]) -> String {
    let mut out = String::new();
    for (table, row) in rows {
        let uuid = row["_uuid"].get(1).and_then(Value::as_str).unwrap_or("?");
        let role = map_get(&row["external_ids"], ROLE_KEY).unwrap_or_default();
        let name = row.get("name").map(show).unwrap_or_default();
        let _ = writeln!(out, "{table} {uuid} name={name} role={role}");
        let Some(cols) = row.as_object() else {
            continue;
        };
        for (col, v) in cols {
            if matches!(col.as_str(), "_uuid" | "_version" | "name") {
                continue;
            }
            let text = show(v);
            if !matches!(text.as_str(), "" | "[]" | "{}") {
                let _ = writeln!(out, "    {col}: {text}");
            }
        }
    }
    let _ = writeln!(
        out,
        "{} NB row(s) owned by service {service} ({}={}, {}={service})",
        rows.len(),
        KIND_KEY,
        OwnerKind::Service.as_str(),
        NAME_KEY
    );
    out
}

/// The rows as JSON: `[{"table": …, "row": …}]` (OVSDB wire values).
pub fn to_json(rows: &[(String, Value)]) -> Value {
    Value::Array(
        rows.iter()
            .map(|(t, r)| json!({"table": t, "row": r}))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_service_name_needs_a_namespace_and_a_name() {
        assert!(check_service_name("shop/web").is_ok());
        for bad in ["web", "/web", "shop/", "a/b/c", ""] {
            let err = check_service_name(bad).unwrap_err().to_string();
            assert!(err.contains("NAMESPACE/NAME"), "{bad}: {err}");
        }
    }

    #[test]
    fn rendered_rows_show_table_role_and_non_empty_columns() {
        let row = json!({
            "_uuid": ["uuid", "1234"],
            "name": "ysvc:shop/web:tcp:cluster",
            "vips": ["map", [["10.96.0.100:80", "10.0.1.3:8080"]]],
            "options": ["map", []],
            "external_ids": ["map", [["ycloud.io/role", "tcp:cluster"]]]
        });
        let text = render("shop/web", &[("Load_Balancer".into(), row)]);
        assert!(
            text.contains("Load_Balancer 1234 name=ysvc:shop/web:tcp:cluster role=tcp:cluster"),
            "{text}"
        );
        assert!(
            text.contains("vips: {10.96.0.100:80=10.0.1.3:8080}"),
            "{text}"
        );
        assert!(!text.contains("options"), "{text}");
        assert!(
            text.contains("1 NB row(s) owned by service shop/web"),
            "{text}"
        );
    }
}
