//! The slice of OVN_Northbound the compiler reads: which tables it monitors, and the
//! client indexes the planner's ownership lookups use.

use std::collections::BTreeMap;
use std::sync::Arc;

use ycloud_ovsdb::cache::{Cache, CacheError, ClientIndex};
use ycloud_ovsdb::schema::DatabaseSchema;

use super::names;

/// Tables the planner reads (all columns: rows are small and the planner compares whole
/// columns).
pub const TABLES: &[&str] = &[
    "Load_Balancer",
    "Load_Balancer_Group",
    "Logical_Router",
    "Logical_Router_Port",
    "Logical_Switch",
    "Logical_Switch_Port",
    "Logical_Router_Static_Route",
    "NAT",
    "Gateway_Chassis",
];

/// A cache of [`TABLES`] with the ownership indexes registered.
pub fn cache(schema: Arc<DatabaseSchema>) -> Result<Cache, CacheError> {
    let monitored: BTreeMap<String, Option<Vec<String>>> =
        TABLES.iter().map(|t| ((*t).to_owned(), None)).collect();
    let cache = Cache::new(schema, monitored)?;
    // Load_Balancer_Group has no external_ids; it is found by its unique name.
    for table in TABLES.iter().filter(|t| **t != "Load_Balancer_Group") {
        cache.add_index(table, ClientIndex::external_id(names::NAME_KEY))?;
    }
    cache.add_index("Logical_Router", ClientIndex::external_id(names::KIND_KEY))?;
    Ok(cache)
}
