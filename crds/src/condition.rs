//! Status conditions following the Kubernetes API conventions.
//!
//! Every ycloud object reports its state as a list of [`Condition`]s. The controller builds the
//! conditions it wants with the constructors here and merges them into the object's list with
//! [`set_condition`], which keeps `lastTransitionTime` when the status did not change and says
//! whether anything changed at all: an unchanged status must not be written back, or every
//! status patch would re-trigger the watch that caused it.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Condition types.
pub mod types {
    /// The object is fully realised: valid, programmed into OVN and (for services) serving.
    pub const READY: &str = "Ready";
    /// The object's OVN rows were written in one transaction and match the spec.
    pub const PROGRAMMED: &str = "Programmed";
    /// Every backend of a service passes its health check (or the service has no check).
    pub const BACKENDS_HEALTHY: &str = "BackendsHealthy";
    /// The spec passed semantic validation (schema and CEL checks already ran at admission).
    pub const VALID: &str = "Valid";
}

/// Condition reasons: CamelCase, stable, meant for alerting and event reasons.
pub mod reasons {
    /// Everything asked for is in place.
    pub const PROGRAMMED: &str = "Programmed";
    /// Work is in progress (first reconcile, waiting for an address, a chassis, …).
    pub const PENDING: &str = "Pending";
    /// The spec breaks a rule the API server could not check; the message names the field.
    pub const INVALID_SPEC: &str = "InvalidSpec";
    /// The spec passed semantic validation.
    pub const VALID: &str = "Valid";
    /// A referenced VPC does not exist.
    pub const VPC_NOT_FOUND: &str = "VpcNotFound";
    /// A referenced subnet does not exist.
    pub const SUBNET_NOT_FOUND: &str = "SubnetNotFound";
    /// A referenced EIP gateway does not exist.
    pub const GATEWAY_NOT_FOUND: &str = "GatewayNotFound";
    /// A requested address is already held by another object.
    pub const ADDRESS_CONFLICT: &str = "AddressConflict";
    /// A requested address lies outside the range it must come from.
    pub const ADDRESS_OUT_OF_RANGE: &str = "AddressOutOfRange";
    /// No free address is left in the range an address must come from.
    pub const POOL_EXHAUSTED: &str = "PoolExhausted";
    /// Networks that one router would have to reach have overlapping CIDRs.
    pub const OVERLAPPING_CIDRS: &str = "OverlappingCidrs";
    /// Writing the OVN Northbound database failed; the controller retries.
    pub const NORTHBOUND_ERROR: &str = "NorthboundError";
    /// Every backend passes its health check.
    pub const ALL_BACKENDS_HEALTHY: &str = "AllBackendsHealthy";
    /// Some, but not all, backends fail their health check.
    pub const SOME_BACKENDS_UNHEALTHY: &str = "SomeBackendsUnhealthy";
    /// No backend is ready: the service drops (or rejects) new connections.
    pub const NO_READY_BACKENDS: &str = "NoReadyBackends";
    /// The service has no health check, so backends are taken as healthy.
    pub const NO_HEALTH_CHECK: &str = "NoHealthCheck";
}

/// The status of a condition: `True`, `False` or `Unknown`.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConditionStatus {
    True,
    False,
    Unknown,
}

impl From<bool> for ConditionStatus {
    fn from(value: bool) -> Self {
        if value { Self::True } else { Self::False }
    }
}

/// One aspect of an object's state, as the Kubernetes API conventions define it.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// The aspect this condition reports, e.g. `Ready` (see the `types` constants).
    #[serde(rename = "type")]
    #[schemars(length(min = 1, max = 316))]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: ConditionStatus,
    /// A CamelCase, machine-readable reason for the last transition (see the `reasons` constants).
    #[schemars(length(min = 1, max = 1024))]
    pub reason: String,
    /// A human-readable explanation; names the field at fault when the spec is invalid.
    #[serde(default)]
    #[schemars(length(max = 32768))]
    pub message: String,
    /// When `status` last changed (not when the condition was last written).
    pub last_transition_time: Time,
    /// The `metadata.generation` this condition was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub observed_generation: Option<i64>,
}

impl Condition {
    /// A condition of any type; `now` is passed in so builders stay free of clocks.
    pub fn new(
        type_: &str,
        status: impl Into<ConditionStatus>,
        reason: &str,
        message: impl Into<String>,
        observed_generation: Option<i64>,
        now: Time,
    ) -> Self {
        Self {
            type_: type_.to_owned(),
            status: status.into(),
            reason: reason.to_owned(),
            message: message.into(),
            last_transition_time: now,
            observed_generation,
        }
    }

    /// `Ready` with the given status.
    pub fn ready(
        status: impl Into<ConditionStatus>,
        reason: &str,
        message: impl Into<String>,
        observed_generation: Option<i64>,
        now: Time,
    ) -> Self {
        Self::new(
            types::READY,
            status,
            reason,
            message,
            observed_generation,
            now,
        )
    }

    /// `Programmed` with the given status.
    pub fn programmed(
        status: impl Into<ConditionStatus>,
        reason: &str,
        message: impl Into<String>,
        observed_generation: Option<i64>,
        now: Time,
    ) -> Self {
        Self::new(
            types::PROGRAMMED,
            status,
            reason,
            message,
            observed_generation,
            now,
        )
    }

    /// `BackendsHealthy` computed from the ready and total backend counts.
    pub fn backends_healthy(
        backends: BackendCounts,
        has_health_check: bool,
        observed_generation: Option<i64>,
        now: Time,
    ) -> Self {
        let BackendCounts { ready, total } = backends;
        let (status, reason) = if !has_health_check {
            (ConditionStatus::True, reasons::NO_HEALTH_CHECK)
        } else if ready == 0 {
            // Includes a service that selects nothing: it cannot serve, whatever the reason.
            (ConditionStatus::False, reasons::NO_READY_BACKENDS)
        } else if ready >= total {
            (ConditionStatus::True, reasons::ALL_BACKENDS_HEALTHY)
        } else {
            (ConditionStatus::False, reasons::SOME_BACKENDS_UNHEALTHY)
        };
        Self::new(
            types::BACKENDS_HEALTHY,
            status,
            reason,
            format!("{ready}/{total} backends ready"),
            observed_generation,
            now,
        )
    }

    /// `Ready=False` with reason `InvalidSpec` and every validation error in the message.
    pub fn invalid_spec(
        errors: &crate::validate::FieldErrors,
        observed_generation: Option<i64>,
        now: Time,
    ) -> Self {
        Self::ready(
            false,
            reasons::INVALID_SPEC,
            errors.to_string(),
            observed_generation,
            now,
        )
    }

    /// Whether this condition says the same as `other`, ignoring `lastTransitionTime`.
    pub fn same_state(&self, other: &Self) -> bool {
        let Self {
            type_,
            status,
            reason,
            message,
            last_transition_time: _,
            observed_generation,
        } = self;
        *type_ == other.type_
            && *status == other.status
            && *reason == other.reason
            && *message == other.message
            && *observed_generation == other.observed_generation
    }
}

/// Ready and total backend counts of a service.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct BackendCounts {
    /// Backends that pass their health check (all of them without a check).
    pub ready: u32,
    /// Backends selected by the service.
    pub total: u32,
}

/// Merges `new` into `conditions` and reports whether the list changed.
///
/// A condition of the same type is replaced; its `lastTransitionTime` is kept when the status
/// did not change, so a reconcile that only recomputes the same state writes nothing.
pub fn set_condition(conditions: &mut Vec<Condition>, mut new: Condition) -> bool {
    match conditions.iter_mut().find(|c| c.type_ == new.type_) {
        None => {
            conditions.push(new);
            true
        }
        Some(old) if old.same_state(&new) => false,
        Some(old) => {
            if old.status == new.status {
                new.last_transition_time = old.last_transition_time.clone();
            }
            *old = new;
            true
        }
    }
}

/// The condition of type `type_`, if present.
pub fn find_condition<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(seconds).expect("valid timestamp"))
    }

    #[test]
    fn a_new_condition_type_is_appended_and_reported_as_a_change() {
        let mut list = vec![];
        assert!(set_condition(
            &mut list,
            Condition::ready(true, reasons::PROGRAMMED, "ok", Some(1), at(10))
        ));
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].last_transition_time, at(10));
    }

    #[test]
    fn recomputing_the_same_condition_later_changes_nothing() {
        let mut list = vec![Condition::ready(
            true,
            reasons::PROGRAMMED,
            "ok",
            Some(1),
            at(10),
        )];
        let changed = set_condition(
            &mut list,
            Condition::ready(true, reasons::PROGRAMMED, "ok", Some(1), at(99)),
        );
        assert!(!changed);
        assert_eq!(list[0].last_transition_time, at(10));
    }

    #[test]
    fn a_new_message_with_the_same_status_keeps_the_transition_time() {
        let mut list = vec![Condition::ready(
            false,
            reasons::PENDING,
            "a",
            Some(1),
            at(10),
        )];
        let changed = set_condition(
            &mut list,
            Condition::ready(false, reasons::INVALID_SPEC, "b", Some(2), at(20)),
        );
        assert!(changed);
        assert_eq!(list[0].reason, reasons::INVALID_SPEC);
        assert_eq!(list[0].observed_generation, Some(2));
        assert_eq!(list[0].last_transition_time, at(10));
    }

    #[test]
    fn a_status_flip_takes_the_new_transition_time() {
        let mut list = vec![
            Condition::programmed(true, reasons::PROGRAMMED, "", Some(1), at(5)),
            Condition::ready(false, reasons::PENDING, "", Some(1), at(10)),
        ];
        assert!(set_condition(
            &mut list,
            Condition::ready(true, reasons::PROGRAMMED, "", Some(1), at(20))
        ));
        assert_eq!(list.len(), 2);
        assert_eq!(list[1].status, ConditionStatus::True);
        assert_eq!(list[1].last_transition_time, at(20));
        assert_eq!(
            list[0].last_transition_time,
            at(5),
            "other types are untouched"
        );
    }

    #[test]
    fn backends_healthy_reasons_follow_the_ready_count() {
        let cases = [
            (
                3,
                3,
                true,
                ConditionStatus::True,
                reasons::ALL_BACKENDS_HEALTHY,
            ),
            (
                1,
                3,
                true,
                ConditionStatus::False,
                reasons::SOME_BACKENDS_UNHEALTHY,
            ),
            (
                0,
                3,
                true,
                ConditionStatus::False,
                reasons::NO_READY_BACKENDS,
            ),
            (
                0,
                0,
                true,
                ConditionStatus::False,
                reasons::NO_READY_BACKENDS,
            ),
            (2, 2, false, ConditionStatus::True, reasons::NO_HEALTH_CHECK),
        ];
        for (ready, total, check, status, reason) in cases {
            let c = Condition::backends_healthy(BackendCounts { ready, total }, check, None, at(0));
            assert_eq!(
                (c.status, c.reason.as_str()),
                (status, reason),
                "{ready}/{total} check={check}"
            );
            assert_eq!(c.message, format!("{ready}/{total} backends ready"));
        }
    }

    #[test]
    fn condition_serializes_with_kubernetes_field_names() {
        let c = Condition::ready(true, reasons::PROGRAMMED, "ok", Some(3), at(0));
        let v = serde_json::to_value(&c).expect("serializes");
        assert_eq!(
            v,
            serde_json::json!({"type": "Ready", "status": "True", "reason": "Programmed",
                "message": "ok", "lastTransitionTime": "1970-01-01T00:00:00Z", "observedGeneration": 3})
        );
    }
}
