//! The vocabulary every patchd crate shares: the operating systems, patch states, ping and
//! command statuses that SSM defines, each spelt once.
//!
//! The adapter (`patchd-aws`) translates AWS's strings into these types at the edge, the store
//! writes and reads them by the same spelling, and the daemon, the reports and the
//! configuration decide on them. A value AWS adds after this build is kept as
//! [`Reported::Unknown`] rather than lost or guessed.

use std::fmt;

mod operating_system;

pub use operating_system::OperatingSystem;

/// An enum whose values have one spelling each, the one AWS (and the store) uses.
pub trait Spelled: Copy + Sized + 'static {
    /// Every value, in declaration order.
    const ALL: &'static [Self];
    /// Every spelling, in the order of `ALL`.
    const NAMES: &'static [&'static str];

    fn as_str(self) -> &'static str;

    /// The inverse of [`Spelled::as_str`]; None for any other text.
    fn parse(text: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|value| value.as_str() == text)
    }
}

/// Declares a closed, `Copy` enum with one spelling per value: [`Spelled`], `Display`,
/// `FromStr`, `ALL` and `NAMES`. The store declares its own status enums with it too.
#[macro_export]
macro_rules! spelled_enum {
    ($(#[$meta:meta])* $vis:vis $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        $vis enum $name {
            $($(#[$vmeta])* $variant),+
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
            /// Every spelling, in declaration order (for "expected one of" messages).
            pub const NAMES: &'static [&'static str] = &[$($text),+];

            /// The spelling the store and AWS use.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }

            /// The inverse of `as_str`; None for any other text.
            pub fn parse(text: &str) -> Option<$name> {
                match text {
                    $($text => Some($name::$variant),)+
                    _ => None,
                }
            }
        }

        impl $crate::Spelled for $name {
            const ALL: &'static [$name] = $name::ALL;
            const NAMES: &'static [&'static str] = $name::NAMES;

            fn as_str(self) -> &'static str {
                $name::as_str(self)
            }

            fn parse(text: &str) -> Option<$name> {
                $name::parse(text)
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl ::std::str::FromStr for $name {
            type Err = $crate::UnknownSpelling;

            fn from_str(text: &str) -> Result<$name, $crate::UnknownSpelling> {
                $name::parse(text).ok_or_else(|| $crate::UnknownSpelling {
                    kind: stringify!($name),
                    text: text.to_string(),
                })
            }
        }
    };
}

/// Text that is none of an enum's spellings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownSpelling {
    pub kind: &'static str,
    pub text: String,
}

impl fmt::Display for UnknownSpelling {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}` is not a known {}", self.text, self.kind)
    }
}

impl std::error::Error for UnknownSpelling {}

/// A value of an SSM enum as AWS reported it: one this build knows, or text AWS added since,
/// kept as it was sent so that it can be shown and stored rather than guessed at.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Reported<T> {
    Known(T),
    Unknown(String),
}

impl<T: Spelled> Reported<T> {
    /// The one translation from AWS's text.
    pub fn parse(text: &str) -> Reported<T> {
        match T::parse(text) {
            Some(known) => Reported::Known(known),
            None => Reported::Unknown(text.to_string()),
        }
    }

    pub fn known(&self) -> Option<T> {
        match self {
            Reported::Known(known) => Some(*known),
            Reported::Unknown(_) => None,
        }
    }

    /// AWS's spelling, known or not.
    pub fn as_str(&self) -> &str {
        match self {
            Reported::Known(known) => known.as_str(),
            Reported::Unknown(text) => text,
        }
    }
}

impl<T: PartialEq> PartialEq<T> for Reported<T> {
    fn eq(&self, other: &T) -> bool {
        matches!(self, Reported::Known(known) if known == other)
    }
}

impl<T> From<T> for Reported<T> {
    fn from(known: T) -> Reported<T> {
        Reported::Known(known)
    }
}

impl<T: Spelled> fmt::Display for Reported<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

spelled_enum! {
    /// SSM's `PatchComplianceDataState`: where one patch stands on one node.
    pub PatchState {
        Installed = "INSTALLED",
        /// Installed but not approved by the baseline.
        InstalledOther = "INSTALLED_OTHER",
        /// Installed with `NoReboot`: still exposed until a reboot and a later scan confirm it.
        InstalledPendingReboot = "INSTALLED_PENDING_REBOOT",
        /// Installed although the baseline rejects it: SSM counts it non-compliant.
        InstalledRejected = "INSTALLED_REJECTED",
        Missing = "MISSING",
        Failed = "FAILED",
        /// Approved, but the package is not on the node. Never a finding.
        NotApplicable = "NOT_APPLICABLE",
        /// A security update the baseline does not approve: still a vendor security patch the
        /// instance lacks, so it opens a finding like MISSING.
        AvailableSecurityUpdate = "AVAILABLE_SECURITY_UPDATE",
    }
}

impl PatchState {
    /// States in which a patch seen for the first time opens a finding.
    pub fn opens_finding(self) -> bool {
        matches!(
            self,
            PatchState::Missing
                | PatchState::Failed
                | PatchState::InstalledPendingReboot
                | PatchState::AvailableSecurityUpdate
        )
    }

    /// States that close (remediate) a finding. `INSTALLED_REJECTED` is not one: SSM counts
    /// it non-compliant, so a finding that reaches it stays open.
    pub fn remediates(self) -> bool {
        matches!(self, PatchState::Installed | PatchState::InstalledOther)
    }
}

/// Patches by state on one node: SSM's summary of a scan (DescribeInstancePatchStates), and
/// the store's record of it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StateCounts {
    pub installed: u32,
    pub installed_other: u32,
    pub installed_pending_reboot: u32,
    pub installed_rejected: u32,
    pub missing: u32,
    pub failed: u32,
    pub not_applicable: u32,
    pub available_security_update: u32,
}

impl StateCounts {
    /// Counts one more patch in `state`.
    pub fn add(&mut self, state: PatchState) {
        let slot = match state {
            PatchState::Installed => &mut self.installed,
            PatchState::InstalledOther => &mut self.installed_other,
            PatchState::InstalledPendingReboot => &mut self.installed_pending_reboot,
            PatchState::InstalledRejected => &mut self.installed_rejected,
            PatchState::Missing => &mut self.missing,
            PatchState::Failed => &mut self.failed,
            PatchState::NotApplicable => &mut self.not_applicable,
            PatchState::AvailableSecurityUpdate => &mut self.available_security_update,
        };
        *slot = slot.saturating_add(1);
    }

    /// Patches in a state that keeps a finding open (what DescribeInstancePatches lists with
    /// the open states' filter): missing, failed, waiting for a reboot, installed though
    /// rejected, and security updates the baseline does not approve.
    pub fn open(&self) -> u32 {
        self.missing
            + self.failed
            + self.installed_pending_reboot
            + self.installed_rejected
            + self.available_security_update
    }
}

spelled_enum! {
    /// SSM's `PingStatus` of a managed node.
    pub PingStatus {
        Online = "Online",
        ConnectionLost = "ConnectionLost",
        Inactive = "Inactive",
    }
}

spelled_enum! {
    /// SSM's `CommandStatus` and `CommandInvocationStatus` (`Delayed` exists for invocations
    /// only: an invocation waiting for an agent that is not connected).
    pub CommandStatus {
        Pending = "Pending",
        InProgress = "InProgress",
        Delayed = "Delayed",
        Success = "Success",
        Cancelled = "Cancelled",
        TimedOut = "TimedOut",
        Failed = "Failed",
        Cancelling = "Cancelling",
    }
}

impl CommandStatus {
    /// Whether the status can no longer change.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            CommandStatus::Success
                | CommandStatus::Cancelled
                | CommandStatus::TimedOut
                | CommandStatus::Failed
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spelling_parses_back_to_its_value() {
        for state in PatchState::ALL {
            assert_eq!(PatchState::parse(state.as_str()), Some(*state));
            assert_eq!(state.to_string().parse::<PatchState>(), Ok(*state));
        }
        for status in CommandStatus::ALL {
            assert_eq!(<CommandStatus as Spelled>::parse(status.as_str()), Some(*status));
        }
        assert_eq!(PatchState::NAMES.len(), PatchState::ALL.len());
        assert_eq!(PingStatus::parse("online"), None, "spellings are exact");
    }

    #[test]
    fn a_value_added_after_this_build_is_kept_as_sent() {
        let new: Reported<CommandStatus> = Reported::parse("Paused");
        assert_eq!(new, Reported::Unknown("Paused".into()));
        assert_eq!(new.as_str(), "Paused");
        assert_eq!(new.known(), None);
        assert!(new != CommandStatus::InProgress);

        let known: Reported<CommandStatus> = Reported::parse("Success");
        assert!(known == CommandStatus::Success);
        assert_eq!(known.to_string(), "Success");
    }

    #[test]
    fn an_unknown_spelling_says_what_it_is_not() {
        let error = "RUNNING".parse::<PatchState>().unwrap_err();
        assert_eq!(error.to_string(), "`RUNNING` is not a known PatchState");
    }
}
