//! The model generator behind `ovsdb-modelgen`: schema in, Rust source out.
//!
//! It lives in the library (not only in the binary) so the rules are unit-testable; the
//! drift test runs the real binary. Output goes through `rustfmt` so the committed files
//! are exactly what `cargo fmt` would leave, and a regeneration is byte-for-byte stable.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::io::Write as _;
use std::process::{Command, Stdio};

use crate::schema::{AtomicType, BaseType, ColumnType, DatabaseSchema, SchemaError, TableSchema};

use super::describe_type;

#[derive(Debug, thiserror::Error)]
pub enum CodegenError {
    #[error(transparent)]
    Schema(#[from] SchemaError),
    #[error("table {table}, column {column}: {reason}")]
    Unsupported {
        table: String,
        column: String,
        reason: String,
    },
    #[error("two generated items would both be named {name} ({first} and {second})")]
    NameClash {
        name: String,
        first: String,
        second: String,
    },
    #[error("running rustfmt on the generated code")]
    Rustfmt(#[source] std::io::Error),
    #[error("rustfmt rejected the generated code: {0}")]
    RustfmtFailed(String),
}

const KEYWORDS: &[&str] = &[
    "as", "async", "await", "break", "const", "continue", "crate", "dyn", "else", "enum", "extern",
    "false", "fn", "for", "gen", "if", "impl", "in", "let", "loop", "match", "mod", "move", "mut",
    "pub", "ref", "return", "self", "static", "struct", "super", "trait", "true", "try", "type",
    "unsafe", "use", "where", "while", "abstract", "become", "box", "do", "final", "macro",
    "override", "priv", "typeof", "unsized", "virtual", "yield",
];

/// `Logical_Switch_Port` → `LogicalSwitchPort`, `ACL` → `Acl`, `Open_vSwitch` → `OpenVswitch`.
pub fn type_name(table: &str) -> String {
    table
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|p| !p.is_empty())
        .map(|p| {
            let mut cs = p.chars();
            let first = cs.next().expect("non-empty").to_ascii_uppercase();
            std::iter::once(first)
                .chain(cs.map(|c| c.to_ascii_lowercase()))
                .collect::<String>()
        })
        .collect()
}

/// An enum value → variant: `from-lport` → `FromLport`, `OpenFlow10` → `OpenFlow10`,
/// `802.1q` → `V8021q`, `` → `Empty`.
pub fn variant_name(value: &str) -> String {
    let s: String = value
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|p| !p.is_empty())
        .map(|p| {
            let mut cs = p.chars();
            let first = cs.next().expect("non-empty").to_ascii_uppercase();
            std::iter::once(first).chain(cs).collect::<String>()
        })
        .collect();
    match s.chars().next() {
        None => "Empty".to_string(),
        Some(c) if c.is_ascii_digit() => format!("V{s}"),
        Some(_) => s,
    }
}

/// A column name as a Rust field name.
pub fn field_name(column: &str) -> String {
    if KEYWORDS.contains(&column) {
        format!("r#{column}")
    } else {
        column.to_string()
    }
}

fn str_lit(s: &str) -> String {
    format!("{s:?}")
}

/// An enum type to generate.
struct EnumDef {
    name: String,
    doc: String,
    values: Vec<String>,
}

/// How a column maps to Rust.
struct ColumnPlan {
    column: String,
    field: String,
    ty: String,
    read: &'static str,
    write: &'static str,
    cleared: String,
    doc: String,
}

fn atom_type(
    table: &str,
    column: &str,
    b: &BaseType,
    enum_name: String,
    enums: &mut Vec<EnumDef>,
) -> Result<String, CodegenError> {
    // Integer enums are rare and read fine as their integer type.
    if let Some(values) = &b.enum_values
        && b.atomic == AtomicType::String
    {
        enums.push(EnumDef {
            name: enum_name.clone(),
            doc: format!("Values of `{table}.{column}`."),
            values: values
                .iter()
                .map(|a| a.as_str().expect("string enum").to_string())
                .collect(),
        });
        return Ok(enum_name);
    }
    Ok(match b.atomic {
        AtomicType::Integer => "i64",
        AtomicType::Real => "f64",
        AtomicType::Boolean => "bool",
        AtomicType::String => "String",
        AtomicType::Uuid => "Uuid",
    }
    .to_string())
}

fn default_atom_expr(t: AtomicType) -> String {
    let v = match t {
        AtomicType::Integer => "Integer",
        AtomicType::Real => "Real",
        AtomicType::Boolean => "Boolean",
        AtomicType::String => "String",
        AtomicType::Uuid => "Uuid",
    };
    format!("Value::Atom(AtomicType::{v}.default_atom())")
}

fn plan_column(
    table: &TableSchema,
    column: &str,
    t: &ColumnType,
    enums: &mut Vec<EnumDef>,
) -> Result<ColumnPlan, CodegenError> {
    let base = format!("{}{}", type_name(&table.name), type_name(column));
    let unsupported = |reason: &str| CodegenError::Unsupported {
        table: table.name.clone(),
        column: column.to_string(),
        reason: reason.to_string(),
    };
    let (ty, read, write, cleared) = if let Some(vt) = &t.value {
        if t.key.atomic == AtomicType::Real {
            return Err(unsupported("maps with real keys cannot be BTreeMap keys"));
        }
        let k = atom_type(&table.name, column, &t.key, format!("{base}Key"), enums)?;
        let v = atom_type(&table.name, column, vt, format!("{base}Value"), enums)?;
        (
            format!("BTreeMap<{k}, {v}>"),
            "map",
            "map_value",
            "Value::empty_map()".to_string(),
        )
    } else {
        let a = atom_type(&table.name, column, &t.key, base, enums)?;
        if t.is_scalar() {
            (a, "scalar", "scalar_value", default_atom_expr(t.key.atomic))
        } else if t.is_optional() {
            (
                format!("Option<{a}>"),
                "optional",
                "optional_value",
                "Value::empty_set()".to_string(),
            )
        } else {
            if t.key.atomic == AtomicType::Real {
                return Err(unsupported("sets of reals cannot be BTreeSets"));
            }
            (
                format!("BTreeSet<{a}>"),
                "set",
                "set_value",
                "Value::empty_set()".to_string(),
            )
        }
    };
    Ok(ColumnPlan {
        column: column.to_string(),
        field: field_name(column),
        ty,
        read,
        write,
        cleared,
        doc: describe_type(t),
    })
}

fn gen_enum(out: &mut String, e: &EnumDef) {
    let variants: Vec<(String, &String)> = e.values.iter().map(|v| (variant_name(v), v)).collect();
    let allowed = format!(
        "one of {}",
        e.values
            .iter()
            .map(|v| format!("{v:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let _ = writeln!(out, "/// {}", e.doc);
    let _ = writeln!(
        out,
        "#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, serde::Serialize, serde::Deserialize)]"
    );
    let _ = writeln!(out, "pub enum {} {{", e.name);
    for (i, (v, s)) in variants.iter().enumerate() {
        if i == 0 {
            let _ = writeln!(out, "#[default]");
        }
        let _ = writeln!(out, "#[serde(rename = {})]\n{v},", str_lit(s));
    }
    let _ = writeln!(out, "}}\n");
    let _ = writeln!(out, "impl {} {{", e.name);
    let _ = writeln!(
        out,
        "pub const ALL: &'static [Self] = &[{}];",
        variants
            .iter()
            .map(|(v, _)| format!("Self::{v}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let _ = writeln!(out, "const ALLOWED: &'static str = {};", str_lit(&allowed));
    let _ = writeln!(out, "pub fn as_str(self) -> &'static str {{ match self {{");
    for (v, s) in &variants {
        let _ = writeln!(out, "Self::{v} => {},", str_lit(s));
    }
    let _ = writeln!(out, "}} }}\n}}\n");
    let _ = writeln!(
        out,
        "impl std::fmt::Display for {} {{ fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {{ f.write_str(self.as_str()) }} }}\n",
        e.name
    );
    let _ = writeln!(
        out,
        "impl FromStr for {} {{ type Err = UnknownVariant;",
        e.name
    );
    let _ = writeln!(
        out,
        "fn from_str(s: &str) -> Result<Self, UnknownVariant> {{ match s {{"
    );
    for (v, s) in &variants {
        let _ = writeln!(out, "{} => Ok(Self::{v}),", str_lit(s));
    }
    let _ = writeln!(
        out,
        "_ => Err(UnknownVariant {{ value: s.to_string(), allowed: Self::ALLOWED }}),\n}} }} }}\n"
    );
    let _ = writeln!(
        out,
        "impl FromAtom for {0} {{ fn from_atom(atom: &Atom) -> Result<Self, ValueError> {{ model::enum_from_atom(atom, Self::ALLOWED) }} }}\n",
        e.name
    );
    let _ = writeln!(
        out,
        "impl ToAtom for {0} {{ fn to_atom(&self) -> Atom {{ Atom::String(self.as_str().to_string()) }} }}\n",
        e.name
    );
}

fn gen_table(out: &mut String, db: &DatabaseSchema, t: &TableSchema, cols: &[ColumnPlan]) {
    let name = type_name(&t.name);
    let mut facts = Vec::new();
    if t.is_root {
        facts.push("a root table".to_string());
    } else {
        facts.push("not a root table: rows nothing references are deleted".to_string());
    }
    for i in &t.indexes {
        facts.push(format!("unique index on ({})", i.join(", ")));
    }
    if let Some(m) = t.max_rows {
        facts.push(format!("at most {m} rows"));
    }
    let _ = writeln!(
        out,
        "/// A row of `{}` ({} {}): {}.",
        t.name,
        db.name,
        db.version,
        facts.join("; ")
    );
    let _ = writeln!(out, "#[derive(Debug, Clone, PartialEq, Default)]");
    let _ = writeln!(out, "pub struct {name} {{");
    let _ = writeln!(
        out,
        "/// `_uuid`; nil for a row not read from the database.\npub uuid: Uuid,"
    );
    for c in cols {
        let _ = writeln!(
            out,
            "/// `{}`: {}\npub {}: {},",
            c.column, c.doc, c.field, c.ty
        );
    }
    let _ = writeln!(out, "}}\n");

    let _ = writeln!(out, "impl Model for {name} {{");
    let _ = writeln!(out, "const TABLE: &'static str = {};", str_lit(&t.name));
    let _ = writeln!(
        out,
        "const COLUMNS: &'static [&'static str] = &[{}];",
        cols.iter()
            .map(|c| str_lit(&c.column))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let _ = writeln!(out, "fn uuid(&self) -> Uuid {{ self.uuid }}");
    let _ = writeln!(out, "fn to_row(&self) -> Row {{ let mut row = Row::new();");
    for c in cols {
        let _ = writeln!(
            out,
            "row.insert({}.to_string(), model::{}(&self.{}));",
            str_lit(&c.column),
            c.write,
            c.field
        );
    }
    let _ = writeln!(out, "row }}");
    let _ = writeln!(
        out,
        "fn from_row(row: &Row) -> Result<Self, ModelError> {{ Ok(Self {{"
    );
    let _ = writeln!(out, "uuid: model::row_uuid(Self::TABLE, row)?,");
    for c in cols {
        let _ = writeln!(
            out,
            "{}: model::{}(Self::TABLE, row, {})?,",
            c.field,
            c.read,
            str_lit(&c.column)
        );
    }
    let _ = writeln!(out, "}}) }}\n}}\n");

    let _ = writeln!(
        out,
        "/// Changes to a `{}` row: [`Patch::Keep`] columns are not written.",
        t.name
    );
    let _ = writeln!(out, "#[derive(Debug, Clone, PartialEq, Default)]");
    let _ = writeln!(out, "pub struct {name}Update {{");
    for c in cols {
        let _ = writeln!(out, "pub {}: Patch<{}>,", c.field, c.ty);
    }
    let _ = writeln!(out, "}}\n");
    let _ = writeln!(out, "impl ModelUpdate for {name}Update {{");
    let _ = writeln!(out, "const TABLE: &'static str = {};", str_lit(&t.name));
    let _ = writeln!(out, "fn to_row(&self) -> Row {{ let mut row = Row::new();");
    for c in cols {
        let _ = writeln!(
            out,
            "self.{}.put(&mut row, {}, model::{}, {});",
            c.field,
            str_lit(&c.column),
            c.write,
            c.cleared
        );
    }
    let _ = writeln!(out, "row }}\n}}\n");
}

/// Generates the (unformatted) module for `db`. `schema_file` is the vendored schema's file
/// name under `ovsdb/schemas/`, included into the module for [`check_compat`](super::check_compat).
/// `module_file` is the output's file name under `ovsdb/src/models/` (for the header).
pub fn generate_unformatted(
    db: &DatabaseSchema,
    schema_file: &str,
    module_file: &str,
) -> Result<String, CodegenError> {
    let mut enums = Vec::new();
    let mut tables = Vec::new();
    for t in db.tables.values() {
        let mut cols = Vec::new();
        for (c, cs) in &t.columns {
            if c == "uuid" {
                return Err(CodegenError::Unsupported {
                    table: t.name.clone(),
                    column: c.clone(),
                    reason: "a column named uuid would clash with the _uuid field".into(),
                });
            }
            cols.push(plan_column(t, c, &cs.type_, &mut enums)?);
        }
        tables.push((t, cols));
    }
    // Every generated type name must be unique.
    let mut names: BTreeMap<String, String> = BTreeMap::new();
    let mut claim = |name: String, what: String| -> Result<(), CodegenError> {
        if let Some(first) = names.insert(name.clone(), what.clone()) {
            return Err(CodegenError::NameClash {
                name,
                first,
                second: what,
            });
        }
        Ok(())
    };
    for (t, _) in &tables {
        claim(type_name(&t.name), format!("table {}", t.name))?;
        claim(
            format!("{}Update", type_name(&t.name)),
            format!("update of table {}", t.name),
        )?;
    }
    for e in &enums {
        claim(e.name.clone(), e.doc.clone())?;
        let mut seen = BTreeSet::new();
        for v in &e.values {
            if !seen.insert(variant_name(v)) {
                return Err(CodegenError::NameClash {
                    name: variant_name(v),
                    first: e.doc.clone(),
                    second: format!("value {v:?}"),
                });
            }
        }
    }

    let mut out = String::new();
    let _ = writeln!(
        out,
        "// @generated by ovsdb-modelgen from schemas/{schema_file} ({} {}). DO NOT EDIT.",
        db.name, db.version
    );
    let _ = writeln!(
        out,
        "// Regenerate: cargo run -p ycloud-ovsdb --bin ovsdb-modelgen -- ovsdb/schemas/{schema_file} ovsdb/src/models/{module_file}\n"
    );
    let _ = writeln!(
        out,
        "//! Typed rows of `{}` {}: one struct per table (implementing [`Model`]), one `…Update`\n//! per table (implementing [`ModelUpdate`]), one enum per enum column.\n",
        db.name, db.version
    );
    // A schema without enums or sets leaves some imports unused.
    let _ = writeln!(out, "#![allow(unused_imports)]\n");
    let _ = writeln!(
        out,
        "use std::collections::{{BTreeMap, BTreeSet}};\nuse std::str::FromStr;\nuse std::sync::OnceLock;\n\nuse uuid::Uuid;\n\nuse crate::model::{{self, CompatReport, Model, ModelError, ModelUpdate, Patch, UnknownVariant}};\nuse crate::schema::{{AtomicType, DatabaseSchema}};\nuse crate::value::{{Atom, FromAtom, Row, ToAtom, Value, ValueError}};\n"
    );
    let _ = writeln!(out, "pub const SCHEMA_NAME: &str = {};", str_lit(&db.name));
    let _ = writeln!(
        out,
        "pub const SCHEMA_VERSION: &str = {};",
        str_lit(&db.version)
    );
    let _ = writeln!(
        out,
        "/// The schema these models were generated from.\npub const SCHEMA_JSON: &str = include_str!(\"../../schemas/{schema_file}\");\n"
    );
    let _ = writeln!(
        out,
        "/// The parsed [`SCHEMA_JSON`].\npub fn schema() -> &'static DatabaseSchema {{ static S: OnceLock<DatabaseSchema> = OnceLock::new(); S.get_or_init(|| {{ let json = serde_json::from_str(SCHEMA_JSON).expect(\"the vendored schema is JSON\"); DatabaseSchema::from_json(&json).expect(\"the vendored schema is valid\") }}) }}\n"
    );
    let _ = writeln!(
        out,
        "/// Checks a server's schema against these models: every table (or only `tables`).\npub fn check_compat(server: &DatabaseSchema, tables: Option<&[&str]>) -> Result<(), CompatReport> {{ model::check_compat(schema(), server, tables) }}\n"
    );
    for e in &enums {
        gen_enum(&mut out, e);
    }
    for (t, cols) in &tables {
        gen_table(&mut out, db, t, cols);
    }
    Ok(out)
}

/// Runs `rustfmt` (edition 2024, the workspace's width) over generated code.
pub fn rustfmt(code: &str) -> Result<String, CodegenError> {
    let mut child = Command::new("rustfmt")
        .args([
            "--edition",
            "2024",
            "--config",
            "max_width=100,use_field_init_shorthand=true",
            "--emit",
            "stdout",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(CodegenError::Rustfmt)?;
    let mut stdin = child.stdin.take().expect("piped");
    let input = code.to_string();
    // Write from a thread: rustfmt may fill its stdout pipe before reading all of stdin.
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let out = child.wait_with_output().map_err(CodegenError::Rustfmt)?;
    writer
        .join()
        .expect("writer thread")
        .map_err(CodegenError::Rustfmt)?;
    if !out.status.success() {
        return Err(CodegenError::RustfmtFailed(
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Generates and formats the module for `db`.
pub fn generate(
    db: &DatabaseSchema,
    schema_file: &str,
    module_file: &str,
) -> Result<String, CodegenError> {
    rustfmt(&generate_unformatted(db, schema_file, module_file)?)
}
