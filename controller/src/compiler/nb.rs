//! The slice of OVN_Northbound the compiler reads: which tables it monitors, and the
//! client indexes the planner's ownership lookups use.

use std::collections::BTreeMap;
use std::sync::Arc;

use ycloud_ovsdb::cache::{Cache, CacheError, ClientIndex};
use ycloud_ovsdb::schema::DatabaseSchema;

use super::names;

/// Tables the planner reads (all columns: rows are small and the planner compares whole
/// columns; of NB_Global only `options`).
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
    // Native health checks: the rows hang off our load balancers; NB_Global for
    // `options:svc_monitor_mac`, which is set only when absent.
    "Load_Balancer_Health_Check",
    "NB_Global",
    // The VPC switches' service-CIDR reject ACLs (`network::add_service_reject`).
    "ACL",
];

/// A cache of [`TABLES`] with the ownership indexes registered.
pub fn cache(schema: Arc<DatabaseSchema>) -> Result<Cache, CacheError> {
    let monitored: BTreeMap<String, Option<Vec<String>>> = TABLES
        .iter()
        .map(|t| {
            // Only NB_Global's options: northd and ovn-controller bump its nb_cfg/sb_cfg/
            // hv_cfg counters and timestamps on every sync, and each update would wake the
            // reconcile loop for nothing.
            let cols = (*t == "NB_Global").then(|| vec!["options".to_owned()]);
            ((*t).to_owned(), cols)
        })
        .collect();
    let cache = Cache::new(schema, monitored)?;
    // Load_Balancer_Group has no external_ids; it is found by its unique name. NB_Global is
    // one row, read whole.
    for table in TABLES
        .iter()
        .filter(|t| **t != "Load_Balancer_Group" && **t != "NB_Global")
    {
        cache.add_index(table, ClientIndex::external_id(names::NAME_KEY))?;
    }
    cache.add_index("Logical_Router", ClientIndex::external_id(names::KIND_KEY))?;
    Ok(cache)
}
