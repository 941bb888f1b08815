//! The emulator's fixed IAM policy for impersonation: who holds the Service Account Token
//! Creator role (`roles/iam.serviceAccountTokenCreator`) on which service account.
//!
//! | member | may impersonate |
//! |---|---|
//! | `connector-sa@…` (the key file, the metadata server) | `target-sa@…`, `delegate-sa@…` |
//! | `dev-user@example.com` (the authorized user) | `delegate-sa@…` |
//! | `delegate-sa@…` | `target-sa@…` |
//! | `principal://…/subject/wasm-workload` (the federated workload) | `target-sa@…` |
//!
//! Nobody else may impersonate anyone: not `target-sa` itself, not other federated
//! subjects.

use crate::credentials::{
    DELEGATE_SA_EMAIL, SERVICE_ACCOUNTS, SERVICE_ACCOUNT_EMAIL, TARGET_SA_EMAIL, USER_EMAIL,
};
use crate::workload_identity::{principal, DEFAULT_SUBJECT};

/// The IAM permission `generateAccessToken` needs on each service account of the chain.
pub const PERMISSION: &str = "iam.serviceAccounts.getAccessToken";

/// Token Creator bindings: (member, service account).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    bindings: Vec<(String, String)>,
}

impl Policy {
    /// The emulator's policy (see the module's table).
    pub fn emulator() -> Self {
        let bindings = [
            (SERVICE_ACCOUNT_EMAIL.to_string(), TARGET_SA_EMAIL),
            (SERVICE_ACCOUNT_EMAIL.to_string(), DELEGATE_SA_EMAIL),
            (USER_EMAIL.to_string(), DELEGATE_SA_EMAIL),
            (DELEGATE_SA_EMAIL.to_string(), TARGET_SA_EMAIL),
            (principal(DEFAULT_SUBJECT), TARGET_SA_EMAIL),
        ];
        Self {
            bindings: bindings
                .into_iter()
                .map(|(m, sa)| (m, sa.to_string()))
                .collect(),
        }
    }

    /// True when `member` (a token's principal) may impersonate `service_account`.
    pub fn may_impersonate(&self, member: &str, service_account: &str) -> bool {
        self.bindings
            .iter()
            .any(|(m, sa)| m == member && sa == service_account)
    }

    /// The first link of `caller → chain[0] → … → chain[n-1]` the policy does not allow,
    /// as (member, service account); `None` if it allows them all.
    pub fn first_denied<'a>(
        &self,
        caller: &'a str,
        chain: &'a [String],
    ) -> Option<(&'a str, &'a str)> {
        let mut member = caller;
        for sa in chain {
            if !self.may_impersonate(member, sa) {
                return Some((member, sa));
            }
            member = sa;
        }
        None
    }
}

/// True for a service account that exists.
pub fn exists(email: &str) -> bool {
    SERVICE_ACCOUNTS.contains(&email)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(sas: &[&str]) -> Vec<String> {
        sas.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_table() {
        let p = Policy::emulator();
        let workload = principal(DEFAULT_SUBJECT);
        for (member, sa, allowed) in [
            (SERVICE_ACCOUNT_EMAIL, TARGET_SA_EMAIL, true),
            (SERVICE_ACCOUNT_EMAIL, DELEGATE_SA_EMAIL, true),
            (USER_EMAIL, DELEGATE_SA_EMAIL, true),
            (USER_EMAIL, TARGET_SA_EMAIL, false),
            (DELEGATE_SA_EMAIL, TARGET_SA_EMAIL, true),
            (TARGET_SA_EMAIL, TARGET_SA_EMAIL, false),
            (TARGET_SA_EMAIL, DELEGATE_SA_EMAIL, false),
            (workload.as_str(), TARGET_SA_EMAIL, true),
            (workload.as_str(), DELEGATE_SA_EMAIL, false),
            (principal("other").as_str(), TARGET_SA_EMAIL, false),
        ] {
            assert_eq!(p.may_impersonate(member, sa), allowed, "{member} → {sa}");
        }
        assert!(exists(TARGET_SA_EMAIL) && exists(DELEGATE_SA_EMAIL));
        assert!(exists(SERVICE_ACCOUNT_EMAIL) && !exists(USER_EMAIL));
    }

    #[test]
    fn chains() {
        let p = Policy::emulator();
        let via_delegate = chain(&[DELEGATE_SA_EMAIL, TARGET_SA_EMAIL]);
        assert_eq!(p.first_denied(USER_EMAIL, &via_delegate), None);
        assert_eq!(p.first_denied(SERVICE_ACCOUNT_EMAIL, &via_delegate), None);
        let direct = chain(&[TARGET_SA_EMAIL]);
        assert_eq!(
            p.first_denied(USER_EMAIL, &direct),
            Some((USER_EMAIL, TARGET_SA_EMAIL))
        );
        let backwards = chain(&[TARGET_SA_EMAIL, DELEGATE_SA_EMAIL]);
        assert_eq!(
            p.first_denied(SERVICE_ACCOUNT_EMAIL, &backwards),
            Some((TARGET_SA_EMAIL, DELEGATE_SA_EMAIL))
        );
    }
}
