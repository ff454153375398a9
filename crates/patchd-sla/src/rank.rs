//! Risk ranking: the vendor's severity, raised by what the operator and CISA know.

use patchd_config::{RiskRank, SlaPolicy};

use crate::KevCatalog;

/// Why a patch has its rank: reports show this so an assessor can follow the ranking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RankReason {
    /// The vendor's severity mapped to a rank.
    VendorSeverity(String),
    /// No (recognised) vendor severity: the policy's `default_rank`.
    PolicyDefault,
    /// An `[[sla.rule]]` listing one of the patch's CVEs.
    Rule { cve: String, reason: Option<String> },
    /// One of the patch's CVEs is in the CISA KEV catalog.
    KnownExploited { cve: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ranked {
    pub rank: RiskRank,
    pub reason: RankReason,
}

/// The rank of a patch. Rules and the KEV catalog only ever raise the vendor's rank: a rule
/// saying `low` for a CVE of a critical patch leaves it critical.
pub fn rank(vendor_severity: Option<&str>, cves: &[String], policy: &SlaPolicy, kev: &KevCatalog) -> Ranked {
    let mut ranked = match vendor_severity.and_then(RiskRank::from_vendor_severity) {
        Some(rank) => Ranked {
            rank,
            reason: RankReason::VendorSeverity(vendor_severity.unwrap_or_default().to_string()),
        },
        None => Ranked { rank: policy.default_rank, reason: RankReason::PolicyDefault },
    };
    for cve in cves {
        for rule in &policy.rules {
            if rule.rank > ranked.rank && rule.cves.iter().any(|c| c.eq_ignore_ascii_case(cve)) {
                ranked = Ranked {
                    rank: rule.rank,
                    reason: RankReason::Rule { cve: cve.clone(), reason: rule.reason.clone() },
                };
            }
        }
        if ranked.rank < RiskRank::Critical && kev.contains(cve) {
            ranked =
                Ranked { rank: RiskRank::Critical, reason: RankReason::KnownExploited { cve: cve.clone() } };
        }
    }
    ranked
}
