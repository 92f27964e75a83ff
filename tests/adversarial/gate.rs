//! Attacks on the gate: body budgets and deadlines, in-flight caps, refusal floods, log
//! forging, the audit log. See the parent module.

#[allow(unused_imports)]
use super::*;
