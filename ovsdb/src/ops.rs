//! Transaction operations (RFC 7047 §5.2), their results, schema validation, and builders
//! that *return* operations so callers collect a whole change in one `Vec<Operation>` and
//! exactly one place sends it (see STYLE.md rule 3).

use std::borrow::Borrow;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::Serialize;
use serde::ser::{SerializeMap, SerializeSeq, Serializer};
use serde_json::Value as Json;
use uuid::Uuid;

use crate::schema::{AtomicType, DatabaseSchema, Problem, SchemaError, bad_value};
use crate::value::{Atom, AtomMap, AtomSet, Row, Value};

/// Errors building, validating or reading operations.
#[derive(Debug, thiserror::Error)]
pub enum OpError {
    #[error(transparent)]
    Schema(#[from] SchemaError),
    #[error("table {table}: condition on {column} with {function}: {reason}")]
    BadCondition {
        table: String,
        column: String,
        function: Function,
        reason: String,
    },
    #[error("table {table}: mutation of {column} with {mutator}: {reason}")]
    BadMutation {
        table: String,
        column: String,
        mutator: Mutator,
        reason: String,
    },
    #[error("invalid uuid-name {name:?} (must match [a-zA-Z_][a-zA-Z0-9_]*)")]
    BadUuidName { name: String },
    #[error("uuid-name {name:?} is defined by more than one insert")]
    DuplicateUuidName { name: String },
    #[error("named-uuid {name:?} is used but no insert in this transaction defines it")]
    UndefinedUuidName { name: String },
    #[error("table {table}: column {column} is set by the server and cannot be written")]
    ReadOnlyColumn { table: String, column: String },
    #[error("malformed transact reply: {0}")]
    BadReply(String),
}

/// Condition functions (RFC 7047 §5.1 `<function>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Function {
    Lt,
    Le,
    Eq,
    Ne,
    Ge,
    Gt,
    Includes,
    Excludes,
}

impl Function {
    pub fn as_str(self) -> &'static str {
        match self {
            Function::Lt => "<",
            Function::Le => "<=",
            Function::Eq => "==",
            Function::Ne => "!=",
            Function::Ge => ">=",
            Function::Gt => ">",
            Function::Includes => "includes",
            Function::Excludes => "excludes",
        }
    }
}

impl fmt::Display for Function {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `[column, function, value]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    pub column: String,
    pub function: Function,
    pub value: Value,
}

impl Condition {
    pub fn new(column: impl Into<String>, function: Function, value: impl Into<Value>) -> Self {
        Condition {
            column: column.into(),
            function,
            value: value.into(),
        }
    }

    /// `["_uuid", "==", ["uuid", u]]`.
    pub fn uuid(u: Uuid) -> Self {
        Condition::new("_uuid", Function::Eq, Value::uuid(u))
    }

    pub fn eq(column: impl Into<String>, value: impl Into<Value>) -> Self {
        Condition::new(column, Function::Eq, value)
    }
}

impl Serialize for Condition {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        (&self.column, self.function.as_str(), &self.value).serialize(s)
    }
}

/// Mutators (RFC 7047 §5.1 `<mutator>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mutator {
    Add,
    Sub,
    Mul,
    Div,
    Mod,
    Insert,
    Delete,
}

impl Mutator {
    pub fn as_str(self) -> &'static str {
        match self {
            Mutator::Add => "+=",
            Mutator::Sub => "-=",
            Mutator::Mul => "*=",
            Mutator::Div => "/=",
            Mutator::Mod => "%=",
            Mutator::Insert => "insert",
            Mutator::Delete => "delete",
        }
    }
}

impl fmt::Display for Mutator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `[column, mutator, value]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Mutation {
    pub column: String,
    pub mutator: Mutator,
    pub value: Value,
}

impl Mutation {
    pub fn new(column: impl Into<String>, mutator: Mutator, value: impl Into<Value>) -> Self {
        Mutation {
            column: column.into(),
            mutator,
            value: value.into(),
        }
    }
}

impl Serialize for Mutation {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        (&self.column, self.mutator.as_str(), &self.value).serialize(s)
    }
}

/// `wait`'s `until`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Until {
    Eq,
    Ne,
}

/// One operation of a `transact` (RFC 7047 §5.2).
#[derive(Debug, Clone, PartialEq)]
pub enum Operation {
    Insert {
        table: String,
        row: Row,
        uuid_name: Option<String>,
    },
    Select {
        table: String,
        where_: Vec<Condition>,
        columns: Option<Vec<String>>,
    },
    Update {
        table: String,
        where_: Vec<Condition>,
        row: Row,
    },
    Mutate {
        table: String,
        where_: Vec<Condition>,
        mutations: Vec<Mutation>,
    },
    Delete {
        table: String,
        where_: Vec<Condition>,
    },
    Wait {
        table: String,
        where_: Vec<Condition>,
        columns: Vec<String>,
        until: Until,
        rows: Vec<Row>,
        /// Milliseconds; `None` waits forever (for the transaction's other conditions).
        timeout: Option<u64>,
    },
    Commit {
        durable: bool,
    },
    Abort,
    Comment(String),
    Assert {
        lock: String,
    },
}

struct Conds<'a>(&'a [Condition]);
impl Serialize for Conds<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for c in self.0 {
            seq.serialize_element(c)?;
        }
        seq.end()
    }
}

impl Serialize for Operation {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("op", self.op_name())?;
        match self {
            Operation::Insert {
                table,
                row,
                uuid_name,
            } => {
                m.serialize_entry("table", table)?;
                m.serialize_entry("row", row)?;
                if let Some(n) = uuid_name {
                    m.serialize_entry("uuid-name", n)?;
                }
            }
            Operation::Select {
                table,
                where_,
                columns,
            } => {
                m.serialize_entry("table", table)?;
                m.serialize_entry("where", &Conds(where_))?;
                if let Some(c) = columns {
                    m.serialize_entry("columns", c)?;
                }
            }
            Operation::Update { table, where_, row } => {
                m.serialize_entry("table", table)?;
                m.serialize_entry("where", &Conds(where_))?;
                m.serialize_entry("row", row)?;
            }
            Operation::Mutate {
                table,
                where_,
                mutations,
            } => {
                m.serialize_entry("table", table)?;
                m.serialize_entry("where", &Conds(where_))?;
                m.serialize_entry("mutations", mutations)?;
            }
            Operation::Delete { table, where_ } => {
                m.serialize_entry("table", table)?;
                m.serialize_entry("where", &Conds(where_))?;
            }
            Operation::Wait {
                table,
                where_,
                columns,
                until,
                rows,
                timeout,
            } => {
                m.serialize_entry("table", table)?;
                m.serialize_entry("where", &Conds(where_))?;
                m.serialize_entry("columns", columns)?;
                m.serialize_entry(
                    "until",
                    match until {
                        Until::Eq => "==",
                        Until::Ne => "!=",
                    },
                )?;
                m.serialize_entry("rows", rows)?;
                if let Some(t) = timeout {
                    m.serialize_entry("timeout", t)?;
                }
            }
            Operation::Commit { durable } => m.serialize_entry("durable", durable)?,
            Operation::Abort => {}
            Operation::Comment(c) => m.serialize_entry("comment", c)?,
            Operation::Assert { lock } => m.serialize_entry("lock", lock)?,
        }
        m.end()
    }
}

impl Operation {
    pub fn op_name(&self) -> &'static str {
        match self {
            Operation::Insert { .. } => "insert",
            Operation::Select { .. } => "select",
            Operation::Update { .. } => "update",
            Operation::Mutate { .. } => "mutate",
            Operation::Delete { .. } => "delete",
            Operation::Wait { .. } => "wait",
            Operation::Commit { .. } => "commit",
            Operation::Abort => "abort",
            Operation::Comment(_) => "comment",
            Operation::Assert { .. } => "assert",
        }
    }

    /// The table this operation touches, if any.
    pub fn table(&self) -> Option<&str> {
        match self {
            Operation::Insert { table, .. }
            | Operation::Select { table, .. }
            | Operation::Update { table, .. }
            | Operation::Mutate { table, .. }
            | Operation::Delete { table, .. }
            | Operation::Wait { table, .. } => Some(table),
            Operation::Commit { .. }
            | Operation::Abort
            | Operation::Comment(_)
            | Operation::Assert { .. } => None,
        }
    }

    /// The RFC 7047 JSON object of this operation.
    pub fn to_json(&self) -> Json {
        serde_json::to_value(self).expect("operations always serialize (reals are finite)")
    }

    /// Checks tables, columns, values, conditions and mutators against `schema`.
    /// Named UUIDs are allowed in values; [`validate`] also checks that each one used is
    /// defined by an insert of the same transaction.
    pub fn validate(&self, schema: &DatabaseSchema) -> Result<(), OpError> {
        let Some(table) = self.table() else {
            return Ok(());
        };
        let ts = schema.table(table)?;
        let check_row = |row: &Row, writing: bool, inserting: bool| -> Result<(), OpError> {
            for (c, v) in row {
                if writing && (c == "_uuid" || c == "_version") {
                    return Err(OpError::ReadOnlyColumn {
                        table: table.to_string(),
                        column: c.clone(),
                    });
                }
                schema.check_value(table, c, v, true)?;
                if writing && !inserting && ts.columns.get(c).is_some_and(|col| !col.mutable) {
                    return Err(bad_value(table, c, v, Problem::NotMutable).into());
                }
            }
            Ok(())
        };
        match self {
            Operation::Insert { row, uuid_name, .. } => {
                if let Some(n) = uuid_name {
                    check_uuid_name(n)?;
                }
                check_row(row, true, true)?;
                // Columns left out get their type's default, which ovsdb-server checks too:
                // a required enum column left out fails there as `constraint violation`.
                for (c, col) in &ts.columns {
                    if !row.contains_key(c) {
                        let d = col.type_.default_value();
                        col.type_
                            .check(&d, false)
                            .map_err(|p| bad_value(table, c, &d, p))?;
                    }
                }
                Ok(())
            }
            Operation::Select {
                where_, columns, ..
            } => {
                check_conditions(schema, table, where_)?;
                check_columns(schema, table, columns.iter().flatten())
            }
            Operation::Update { where_, row, .. } => {
                check_conditions(schema, table, where_)?;
                check_row(row, true, false)
            }
            Operation::Mutate {
                where_, mutations, ..
            } => {
                check_conditions(schema, table, where_)?;
                for m in mutations {
                    check_mutation(schema, table, m)?;
                }
                Ok(())
            }
            Operation::Delete { where_, .. } => check_conditions(schema, table, where_),
            Operation::Wait {
                where_,
                columns,
                rows,
                ..
            } => {
                check_conditions(schema, table, where_)?;
                check_columns(schema, table, columns.iter())?;
                for r in rows {
                    check_row(r, false, false)?;
                }
                Ok(())
            }
            Operation::Commit { .. }
            | Operation::Abort
            | Operation::Comment(_)
            | Operation::Assert { .. } => Ok(()),
        }
    }
}

/// Validates a whole transaction: every operation, and named UUIDs defined once and
/// defined wherever used.
pub fn validate<O: Borrow<Operation>>(ops: &[O], schema: &DatabaseSchema) -> Result<(), OpError> {
    let mut defined = BTreeSet::new();
    for op in ops.iter().map(Borrow::borrow) {
        op.validate(schema)?;
        if let Operation::Insert {
            uuid_name: Some(n), ..
        } = op
            && !defined.insert(n.as_str())
        {
            return Err(OpError::DuplicateUuidName { name: n.clone() });
        }
    }
    let mut used = Vec::new();
    for op in ops.iter().map(Borrow::borrow) {
        match op {
            Operation::Insert { row, .. } | Operation::Update { row, .. } => {
                row.values().for_each(|v| named_in(v, &mut used))
            }
            Operation::Mutate { mutations, .. } => {
                mutations.iter().for_each(|m| named_in(&m.value, &mut used))
            }
            _ => {}
        }
        match op {
            Operation::Select { where_, .. }
            | Operation::Update { where_, .. }
            | Operation::Mutate { where_, .. }
            | Operation::Delete { where_, .. }
            | Operation::Wait { where_, .. } => {
                where_.iter().for_each(|c| named_in(&c.value, &mut used))
            }
            _ => {}
        }
    }
    if let Some(n) = used.into_iter().find(|n| !defined.contains(n.as_str())) {
        return Err(OpError::UndefinedUuidName { name: n });
    }
    Ok(())
}

fn named_in(v: &Value, out: &mut Vec<String>) {
    let mut push = |a: &Atom| {
        if let Atom::NamedUuid(n) = a {
            out.push(n.clone());
        }
    };
    match v {
        Value::Atom(a) => push(a),
        Value::Set(s) => s.iter().for_each(push),
        Value::Map(m) => m.iter().for_each(|(k, v)| {
            push(k);
            push(v)
        }),
    }
}

fn check_uuid_name(n: &str) -> Result<(), OpError> {
    let mut chars = n.chars();
    let ok = matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(OpError::BadUuidName {
            name: n.to_string(),
        })
    }
}

fn check_columns<'a>(
    schema: &DatabaseSchema,
    table: &str,
    columns: impl Iterator<Item = &'a String>,
) -> Result<(), OpError> {
    for c in columns {
        schema.column(table, c)?;
    }
    Ok(())
}

/// Checks the atoms of `value` against the column's key (and value) types without the
/// element-count limits, which do not apply to condition operands and mutation arguments.
fn check_atoms(
    schema: &DatabaseSchema,
    table: &str,
    column: &str,
    value: &Value,
    keys_only: bool,
) -> Result<(), OpError> {
    let ty = schema.column(table, column)?;
    let bad = |p: Problem| -> OpError { bad_value(table, column, value, p).into() };
    match (value, &ty.value) {
        (Value::Map(m), Some(vt)) => {
            for (k, v) in m {
                ty.key.check(k, true).map_err(bad)?;
                vt.check(v, true).map_err(bad)?;
            }
        }
        (Value::Map(_), None) => return Err(bad(Problem::MapForNonMap)),
        (Value::Atom(_) | Value::Set(_), Some(_)) if !keys_only && !value.is_empty() => {
            return Err(bad(Problem::SetForMap));
        }
        (Value::Atom(a), _) => ty.key.check(a, true).map_err(bad)?,
        (Value::Set(s), _) => {
            for a in s {
                ty.key.check(a, true).map_err(bad)?;
            }
        }
    }
    Ok(())
}

fn check_conditions(
    schema: &DatabaseSchema,
    table: &str,
    conds: &[Condition],
) -> Result<(), OpError> {
    for c in conds {
        let ty = schema.column(table, &c.column)?;
        let err = |reason: String| OpError::BadCondition {
            table: table.to_string(),
            column: c.column.clone(),
            function: c.function,
            reason,
        };
        match c.function {
            Function::Lt | Function::Le | Function::Gt | Function::Ge => {
                let ordered = matches!(ty.key.atomic, AtomicType::Integer | AtomicType::Real);
                if !ordered || ty.is_map() || ty.max != Some(1) {
                    return Err(err(
                        "ordering functions apply only to integer and real columns of at most one element"
                            .into(),
                    ));
                }
            }
            Function::Eq | Function::Ne | Function::Includes | Function::Excludes => {}
        }
        check_atoms(schema, table, &c.column, &c.value, false)?;
    }
    Ok(())
}

fn check_mutation(schema: &DatabaseSchema, table: &str, m: &Mutation) -> Result<(), OpError> {
    if m.column == "_uuid" || m.column == "_version" {
        return Err(OpError::ReadOnlyColumn {
            table: table.to_string(),
            column: m.column.clone(),
        });
    }
    let ts = schema.table(table)?;
    let col = ts
        .columns
        .get(&m.column)
        .ok_or_else(|| SchemaError::UnknownColumn {
            table: table.to_string(),
            column: m.column.clone(),
        })?;
    let err = |reason: &str| OpError::BadMutation {
        table: table.to_string(),
        column: m.column.clone(),
        mutator: m.mutator,
        reason: reason.to_string(),
    };
    if !col.mutable {
        return Err(err("the column is not mutable"));
    }
    let ty = &col.type_;
    match m.mutator {
        Mutator::Add | Mutator::Sub | Mutator::Mul | Mutator::Div | Mutator::Mod => {
            let numeric = matches!(ty.key.atomic, AtomicType::Integer | AtomicType::Real);
            if ty.is_map() || !numeric {
                return Err(err(
                    "arithmetic applies only to integer and real columns (or sets of them)",
                ));
            }
            if m.mutator == Mutator::Mod && ty.key.atomic != AtomicType::Integer {
                return Err(err("%= applies only to integers"));
            }
            let Some(a) = m.value.as_atom() else {
                return Err(err("the operand must be a single number"));
            };
            // The operand is a bare number; the column's range applies to the result only.
            let ok = match ty.key.atomic {
                AtomicType::Integer => matches!(a, Atom::Integer(_)),
                _ => matches!(a, Atom::Integer(_) | Atom::Real(_)),
            };
            if !ok {
                return Err(err("the operand has the wrong type"));
            }
            if matches!(m.mutator, Mutator::Div | Mutator::Mod) && a.as_real() == Some(0.0) {
                return Err(err("division by zero"));
            }
            Ok(())
        }
        Mutator::Insert => {
            if ty.is_scalar() {
                return Err(err("insert applies only to set and map columns"));
            }
            check_atoms(schema, table, &m.column, &m.value, false)
        }
        Mutator::Delete => {
            if ty.is_scalar() {
                return Err(err("delete applies only to set and map columns"));
            }
            // For maps, delete takes either a map (pairs) or a set of keys.
            check_atoms(schema, table, &m.column, &m.value, true)
        }
    }
}

/// The `params` of a `transact` request: `[db, op, …]`.
pub fn transact_params(db: &str, ops: &[Operation]) -> Json {
    let mut v = Vec::with_capacity(ops.len() + 1);
    v.push(Json::String(db.to_string()));
    v.extend(ops.iter().map(Operation::to_json));
    Json::Array(v)
}

/// The `params` of a `transact` request, `[db, op, …]`, as [`transact_params`] builds
/// them but serialized straight from the operations, with no JSON tree in between.
#[derive(Debug, Clone, Copy)]
pub struct TransactParams<'a, O = Operation> {
    pub db: &'a str,
    pub ops: &'a [O],
}

impl<O: Borrow<Operation>> Serialize for TransactParams<'_, O> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.ops.len() + 1))?;
        seq.serialize_element(self.db)?;
        for op in self.ops {
            seq.serialize_element(op.borrow())?;
        }
        seq.end()
    }
}

/// One element of a `transact` reply.
#[derive(Debug, Clone, PartialEq)]
pub enum OperationResult {
    /// `{}`: update-less operations (commit, abort, wait, comment, assert).
    Empty,
    /// `{"uuid": …}` from an insert.
    Uuid(Uuid),
    /// `{"count": n}` from update, mutate and delete.
    Count(u64),
    /// `{"rows": […]}` from select.
    Rows(Vec<Row>),
    /// `{"error": …, "details": …}`.
    Error {
        error: String,
        details: Option<String>,
    },
    /// `null`: not executed because an earlier operation failed.
    NotExecuted,
}

/// The server's error strings (RFC 7047 §4.1.3 and ovsdb-server additions), for callers
/// that map them to typed errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    ConstraintViolation,
    ReferentialIntegrity,
    ResourcesExhausted,
    IoError,
    TimedOut,
    Aborted,
    NotOwner,
    SyntaxError,
    NotSupported,
    Other,
}

impl ErrorKind {
    pub fn from_error(error: &str) -> ErrorKind {
        match error {
            "constraint violation" => ErrorKind::ConstraintViolation,
            "referential integrity violation" => ErrorKind::ReferentialIntegrity,
            "resources exhausted" => ErrorKind::ResourcesExhausted,
            "I/O error" => ErrorKind::IoError,
            "timed out" => ErrorKind::TimedOut,
            "aborted" => ErrorKind::Aborted,
            "not owner" => ErrorKind::NotOwner,
            "syntax error" | "unknown column" | "unknown table" => ErrorKind::SyntaxError,
            "not supported" => ErrorKind::NotSupported,
            _ => ErrorKind::Other,
        }
    }
}

impl OperationResult {
    pub fn from_json(j: &Json) -> Result<OperationResult, OpError> {
        if j.is_null() {
            return Ok(OperationResult::NotExecuted);
        }
        let o = j
            .as_object()
            .ok_or_else(|| OpError::BadReply(format!("operation result {j} is not an object")))?;
        if let Some(e) = o.get("error") {
            let error = e
                .as_str()
                .ok_or_else(|| OpError::BadReply(format!("error {e} is not a string")))?
                .to_string();
            let details = o.get("details").and_then(Json::as_str).map(str::to_string);
            return Ok(OperationResult::Error { error, details });
        }
        if let Some(u) = o.get("uuid") {
            let v: Value = serde_json::from_value(u.clone())
                .map_err(|e| OpError::BadReply(format!("uuid {u}: {e}")))?;
            return match v {
                Value::Atom(Atom::Uuid(u)) => Ok(OperationResult::Uuid(u)),
                other => Err(OpError::BadReply(format!("uuid {other} is not a uuid"))),
            };
        }
        if let Some(c) = o.get("count") {
            return c.as_u64().map(OperationResult::Count).ok_or_else(|| {
                OpError::BadReply(format!("count {c} is not a non-negative integer"))
            });
        }
        if let Some(r) = o.get("rows") {
            let rows: Vec<Row> = serde_json::from_value(r.clone())
                .map_err(|e| OpError::BadReply(format!("rows: {e}")))?;
            return Ok(OperationResult::Rows(rows));
        }
        if o.is_empty() {
            return Ok(OperationResult::Empty);
        }
        Err(OpError::BadReply(format!(
            "unrecognised operation result {j}"
        )))
    }

    pub fn is_error(&self) -> bool {
        matches!(self, OperationResult::Error { .. })
    }
}

/// A parsed `transact` result array.
#[derive(Debug, Clone, PartialEq)]
pub struct TransactResult {
    pub results: Vec<OperationResult>,
}

/// The first error of a transaction and which operation it belongs to. `index` equal to
/// the number of operations means the commit itself failed (e.g. a constraint violation
/// found at commit time, reported as an extra element).
#[derive(Debug, Clone, PartialEq)]
pub struct TransactError {
    pub index: usize,
    pub op: Option<&'static str>,
    pub error: String,
    pub kind: ErrorKind,
    pub details: Option<String>,
}

impl TransactResult {
    pub fn from_json(j: &Json) -> Result<TransactResult, OpError> {
        let a = j
            .as_array()
            .ok_or_else(|| OpError::BadReply(format!("transact result {j} is not an array")))?;
        Ok(TransactResult {
            results: a
                .iter()
                .map(OperationResult::from_json)
                .collect::<Result<_, _>>()?,
        })
    }

    pub fn first_error<O: Borrow<Operation>>(&self, ops: &[O]) -> Option<TransactError> {
        self.results.iter().enumerate().find_map(|(i, r)| match r {
            OperationResult::Error { error, details } => Some(TransactError {
                index: i,
                op: ops.get(i).map(|o| o.borrow().op_name()),
                error: error.clone(),
                kind: ErrorKind::from_error(error),
                details: details.clone(),
            }),
            _ => None,
        })
    }

    /// Maps each insert's `uuid-name` to the UUID the server gave the row.
    pub fn named_uuids<O: Borrow<Operation>>(&self, ops: &[O]) -> BTreeMap<String, Uuid> {
        ops.iter()
            .map(Borrow::borrow)
            .zip(&self.results)
            .filter_map(|(op, r)| match (op, r) {
                (
                    Operation::Insert {
                        uuid_name: Some(n), ..
                    },
                    OperationResult::Uuid(u),
                ) => Some((n.clone(), *u)),
                _ => None,
            })
            .collect()
    }
}

impl fmt::Display for TransactError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.op {
            Some(op) => write!(f, "operation {} ({op}) failed: {}", self.index, self.error)?,
            None => write!(f, "transaction failed at commit: {}", self.error)?,
        }
        if let Some(d) = &self.details {
            write!(f, " ({d})")?;
        }
        Ok(())
    }
}

// ---- builders ----

/// Insert `row` into `table` under the named UUID `uuid_name`, which later operations of
/// the same transaction may reference with [`Value::named_uuid`].
pub fn insert(table: impl Into<String>, row: Row, uuid_name: impl Into<String>) -> Operation {
    Operation::Insert {
        table: table.into(),
        row,
        uuid_name: Some(uuid_name.into()),
    }
}

/// Update only the columns of `new` whose value differs from `old` (both as read from the
/// cache or a model's `to_row`); `None` when nothing changed, so an unchanged object writes
/// nothing. `_uuid` and `_version` are never written.
pub fn update_changed(
    table: impl Into<String>,
    uuid: Uuid,
    old: &Row,
    new: &Row,
) -> Option<Operation> {
    let row: Row = new
        .iter()
        .filter(|(c, v)| !c.starts_with('_') && old.get(*c) != Some(*v))
        .map(|(c, v)| (c.clone(), v.clone()))
        .collect();
    (!row.is_empty()).then(|| Operation::Update {
        table: table.into(),
        where_: vec![Condition::uuid(uuid)],
        row,
    })
}

/// Set the given columns of one row.
pub fn update(table: impl Into<String>, uuid: Uuid, row: Row) -> Operation {
    Operation::Update {
        table: table.into(),
        where_: vec![Condition::uuid(uuid)],
        row,
    }
}

/// Delete one row.
pub fn delete(table: impl Into<String>, uuid: Uuid) -> Operation {
    Operation::Delete {
        table: table.into(),
        where_: vec![Condition::uuid(uuid)],
    }
}

fn mutate(table: impl Into<String>, uuid: Uuid, mutations: Vec<Mutation>) -> Operation {
    Operation::Mutate {
        table: table.into(),
        where_: vec![Condition::uuid(uuid)],
        mutations,
    }
}

/// Set map keys to values, replacing existing values. A mutate `insert` alone leaves keys
/// that already exist untouched, so the keys are deleted first in the same operation.
pub fn map_set_keys<K: Into<Atom>, V: Into<Atom>>(
    table: impl Into<String>,
    uuid: Uuid,
    column: &str,
    pairs: impl IntoIterator<Item = (K, V)>,
) -> Operation {
    let pairs: AtomMap = pairs
        .into_iter()
        .map(|(k, v)| (k.into(), v.into()))
        .collect();
    let keys: AtomSet = pairs.keys().cloned().collect();
    mutate(
        table,
        uuid,
        vec![
            Mutation::new(column, Mutator::Delete, Value::Set(keys)),
            Mutation::new(column, Mutator::Insert, Value::Map(pairs)),
        ],
    )
}

/// Delete map keys whatever their values.
pub fn map_delete_keys<K: Into<Atom>>(
    table: impl Into<String>,
    uuid: Uuid,
    column: &str,
    keys: impl IntoIterator<Item = K>,
) -> Operation {
    mutate(
        table,
        uuid,
        vec![Mutation::new(column, Mutator::Delete, Value::set(keys))],
    )
}

/// The one mutate that turns map `old` into map `new` touching only changed keys; `None`
/// when they are equal.
pub fn map_update(
    table: impl Into<String>,
    uuid: Uuid,
    column: &str,
    old: &AtomMap,
    new: &AtomMap,
) -> Option<Operation> {
    let stale: AtomSet = old
        .iter()
        .filter(|(k, v)| new.get(*k) != Some(*v))
        .map(|(k, _)| k.clone())
        .collect();
    let fresh: AtomMap = new
        .iter()
        .filter(|(k, v)| old.get(*k) != Some(*v))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let mut mutations = Vec::new();
    if !stale.is_empty() {
        mutations.push(Mutation::new(column, Mutator::Delete, Value::Set(stale)));
    }
    if !fresh.is_empty() {
        mutations.push(Mutation::new(column, Mutator::Insert, Value::Map(fresh)));
    }
    (!mutations.is_empty()).then(|| mutate(table, uuid, mutations))
}

/// Add elements to a set column.
pub fn set_insert<A: Into<Atom>>(
    table: impl Into<String>,
    uuid: Uuid,
    column: &str,
    elements: impl IntoIterator<Item = A>,
) -> Operation {
    mutate(
        table,
        uuid,
        vec![Mutation::new(column, Mutator::Insert, Value::set(elements))],
    )
}

/// Remove elements from a set column.
pub fn set_delete<A: Into<Atom>>(
    table: impl Into<String>,
    uuid: Uuid,
    column: &str,
    elements: impl IntoIterator<Item = A>,
) -> Operation {
    mutate(
        table,
        uuid,
        vec![Mutation::new(column, Mutator::Delete, Value::set(elements))],
    )
}

/// Guard against a duplicate insert: the transaction fails with `timed out` if a row with
/// `column == value` already exists (at commit, not at the time the caller looked at its
/// cache). Put it before the insert.
pub fn wait_absent(table: impl Into<String>, column: &str, value: impl Into<Value>) -> Operation {
    let value = value.into();
    Operation::Wait {
        table: table.into(),
        where_: vec![Condition::eq(column, value.clone())],
        columns: vec![column.to_string()],
        until: Until::Ne,
        rows: vec![Row::from([(column.to_string(), value)])],
        timeout: Some(0),
    }
}

/// `select` everything (all columns) matching `where_`.
pub fn select(table: impl Into<String>, where_: Vec<Condition>) -> Operation {
    Operation::Select {
        table: table.into(),
        where_,
        columns: None,
    }
}

#[cfg(test)]
#[path = "ops/tests.rs"]
mod tests;
